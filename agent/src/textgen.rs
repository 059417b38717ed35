//! A deterministic, offline stand-in for a language model: it writes
//! plausible-looking sentences about the words of the prompt, one token at a
//! time, and changes subject when steered.

/// Words that fill the sentences around the topic.
const OPENERS: &[&str] = &["Consider", "Notice", "Remember", "Imagine", "Picture", "Think about"];
const VERBS: &[&str] = &[
    "shapes",
    "changes",
    "explains",
    "connects to",
    "depends on",
    "reveals",
    "improves",
];
const ADJECTIVES: &[&str] = &[
    "quiet",
    "durable",
    "surprising",
    "simple",
    "careful",
    "steady",
    "bright",
    "practical",
];
const NOUNS: &[&str] = &[
    "details",
    "patterns",
    "choices",
    "tradeoffs",
    "results",
    "habits",
    "questions",
    "ideas",
];

/// A token generator seeded by the prompt.
#[derive(Debug, Clone)]
pub struct TextGen {
    topic: Vec<String>,
    state: u64,
    queue: std::collections::VecDeque<String>,
}

fn hash(text: &str) -> u64 {
    // FNV-1a: stable across runs and platforms.
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Words that say nothing about a topic.
const STOPWORDS: &[&str] = &[
    "about", "and", "are", "but", "can", "could", "for", "from", "give", "how", "instead", "into", "let", "like",
    "more", "please", "should", "some", "talk", "tell", "that", "the", "then", "this", "what", "when", "where",
    "which", "who", "why", "will", "with", "would", "you", "your",
];

fn topic_words(text: &str) -> Vec<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect();
    if words.is_empty() { vec!["this".into()] } else { words }
}

impl TextGen {
    /// A generator about `prompt`.
    ///
    /// ```
    /// use durable_session_agent::textgen::TextGen;
    /// let a: Vec<String> = TextGen::new("rust streams").take(12).collect();
    /// let b: Vec<String> = TextGen::new("rust streams").take(12).collect();
    /// assert_eq!(a, b, "deterministic");
    /// assert!(a.concat().contains("rust") || a.concat().contains("streams"));
    /// ```
    pub fn new(prompt: &str) -> Self {
        Self {
            topic: topic_words(prompt),
            state: hash(prompt) | 1,
            queue: Default::default(),
        }
    }

    /// Changes subject: the following tokens are about `direction`.
    pub fn steer(&mut self, direction: &str) {
        self.topic = topic_words(direction);
        self.queue.clear();
        self.queue.push_back(" Changing".into());
        self.queue.push_back(" course:".into());
        for w in &self.topic {
            self.queue.push_back(format!(" {w}"));
        }
        self.queue.push_back(".".into());
    }

    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        items[(self.state % items.len() as u64) as usize]
    }

    fn sentence(&mut self) {
        let topic: Vec<String> = self.topic.clone();
        let topic_refs: Vec<&str> = topic.iter().map(String::as_str).collect();
        let subject = self.pick(&topic_refs).to_owned();
        let words = [
            self.pick(OPENERS).to_owned(),
            "how".into(),
            subject,
            self.pick(VERBS).to_owned(),
            "the".into(),
            self.pick(ADJECTIVES).to_owned(),
            format!("{}.", self.pick(NOUNS)),
        ];
        for w in words {
            self.queue.push_back(format!(" {w}"));
        }
    }
}

impl Iterator for TextGen {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.queue.is_empty() {
            self.sentence();
        }
        self.queue.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steering_changes_the_subject() {
        let mut g = TextGen::new("tell me about trains");
        let before: String = g.by_ref().take(14).collect();
        assert!(before.contains("trains"));
        assert!(!before.contains("tell"), "stopwords are not topics");
        g.steer("talk about volcanoes instead");
        let after: String = g.by_ref().take(40).collect();
        assert!(after.starts_with(" Changing course:"));
        assert!(after.contains("volcanoes"));
        assert!(!after.contains("instead"));
        assert!(!after.contains("trains"));
    }
}
