// Makes docs/demo.png for the README: the demo in two tabs side by side, an
// answer being written in both, with a steer from the right-hand tab.
//   node scripts/readme-screenshot.mjs http://127.0.0.1:8080   (npm start running)
import { launchBrowser } from "../tests/support/browser.mjs";

const base = process.argv[2] ?? "http://127.0.0.1:8080";
const browser = await launchBrowser();
const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
const session = `readme-${Date.now().toString(36)}`;
const url = `${base}/?session=${session}`;
await page.setContent(`<!doctype html><style>
  body { margin: 0; display: grid; grid-template-columns: 1fr 1fr; gap: 8px; background: #d0d5dd; font: 13px system-ui; }
  figure { margin: 0; display: flex; flex-direction: column; }
  figcaption { padding: 6px 10px; background: #344054; color: #fff; }
  iframe { border: 0; height: 690px; width: 100%; background: #fff; }
</style>
<figure><figcaption>Tab A — asked the question</figcaption><iframe id="a" src="${url}"></iframe></figure>
<figure><figcaption>Tab B — same URL, joined mid-answer, steering</figcaption><iframe id="b" src="${url}"></iframe></figure>`);
const frame = async (id) => (await page.$(`#${id}`)).contentFrame();
const a = await frame("a");
const b = await frame("b");
await a.waitForSelector("[data-testid=message-input]");
await b.waitForSelector("[data-testid=message-input]");
await a.fill("[data-testid=message-input]", "Tell me about night trains across Europe");
await a.click("[data-testid=send-button]");
await b.waitForFunction(() => (document.querySelector("[data-testid=run-text]")?.textContent.length ?? 0) > 120, null, { timeout: 30_000 });
await b.fill("[data-testid=steer-input]", "focus on sleeper cabins");
await b.click("[data-testid=steer-button]");
await a.waitForFunction(() => document.querySelector("[data-testid=run-text]")?.textContent.includes("sleeper"), null, { timeout: 30_000 });
await page.waitForTimeout(1200);
await page.screenshot({ path: "docs/demo.png" });
await browser.close();
console.log(`docs/demo.png written (session ${session})`);
