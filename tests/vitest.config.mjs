import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["tests/conformance/**/*.test.mjs"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    reporters: ["default"],
  },
});
