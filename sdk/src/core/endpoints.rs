//! The nodes of one cluster a client may connect to, and which one the next
//! connection attempt goes to: the rule every transport follows for
//! failover.
//!
//! The nodes share one log (several server nodes on one Redis), so an
//! offset means the same on each. The first attempt goes to the first node;
//! every later attempt follows a failed or dropped connection and goes to
//! the next node, round and round. The core then resumes every
//! subscription from its offset and resends unacknowledged appends with
//! their producer ids on whichever node answers: losing a node costs a
//! reconnect, never an event.

/// The nodes, in order of preference, and the one in use.
///
/// ```
/// use durable_sessions::core::endpoints::Endpoints;
/// let mut nodes = Endpoints::new("ws://a/v1/ws", ["ws://b/v1/ws"]);
/// assert_eq!(*nodes.next_attempt(), "ws://a/v1/ws"); // the first attempt
/// assert_eq!(*nodes.next_attempt(), "ws://b/v1/ws"); // after a failure
/// assert_eq!(*nodes.next_attempt(), "ws://a/v1/ws"); // round and round
/// assert_eq!(*nodes.first(), "ws://a/v1/ws");
/// ```
#[derive(Debug, Clone)]
pub struct Endpoints<T> {
    nodes: Vec<T>,
    current: usize,
    attempted: bool,
}

impl<T> Endpoints<T> {
    /// `first`, then `rest`.
    pub fn new(first: T, rest: impl IntoIterator<Item = T>) -> Self {
        Self {
            nodes: std::iter::once(first).chain(rest).collect(),
            current: 0,
            attempted: false,
        }
    }

    /// The node for a new connection attempt: the first node the first
    /// time, the next one after it every later time.
    pub fn next_attempt(&mut self) -> &T {
        if self.attempted {
            self.current = (self.current + 1) % self.nodes.len();
        }
        self.attempted = true;
        &self.nodes[self.current]
    }

    /// The node connected to now (or being tried).
    pub fn current(&self) -> &T {
        &self.nodes[self.current]
    }

    /// The first node: the cluster's name, the same whichever node is in
    /// use (persisted state is kept under it).
    pub fn first(&self) -> &T {
        &self.nodes[0]
    }
}

#[cfg(test)]
mod tests {
    use super::Endpoints;

    #[test]
    fn one_node_is_always_that_node() {
        let mut e = Endpoints::new("a", []);
        for _ in 0..3 {
            assert_eq!(*e.next_attempt(), "a");
        }
    }

    #[test]
    fn attempts_go_round_in_order_and_current_follows() {
        let mut e = Endpoints::new(1, [2, 3]);
        assert_eq!(*e.current(), 1, "before any attempt: the first");
        let tried: Vec<i32> = (0..7).map(|_| *e.next_attempt()).collect();
        assert_eq!(tried, [1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(*e.current(), 1);
        assert_eq!(*e.first(), 1);
    }
}
