//! The session index: a JSON stream ([`SESSION_INDEX_PATH`]) that lists every
//! session stream as it is created, so agents discover sessions by
//! subscribing to one stream instead of needing a handshake with each client.
//!
//! A session and its index entry are written in one transaction
//! ([`CreateStream::index_entry`]): a crash never leaves a session that no
//! agent will ever see.

use bytes::Bytes;
use durable_session_protocol::session::{IndexEvent, SESSION_INDEX_PATH, session_id_of};

use crate::storage::{CreateStream, Expiry, IndexEntry, Storage, StoreResult};

/// Creates the index stream if it does not exist yet.
pub async fn ensure(storage: &dyn Storage) -> StoreResult<()> {
    storage
        .create(CreateStream {
            path: SESSION_INDEX_PATH.into(),
            content_type: Some("application/json".into()),
            expiry: Expiry::Never,
            closed: false,
            body: Bytes::new(),
            fork: None,
            index_entry: None,
        })
        .await
        .map(|_| ())
}

/// The index entry that creating the stream at `path` must write with it:
/// `Some` for a session, `None` for any other stream.
///
/// ```
/// use durable_session_server::session_index::entry_for;
/// let entry = entry_for("sessions/abc").unwrap();
/// assert_eq!(entry.path, "_index/sessions");
/// assert_eq!(&entry.json[..], br#"{"type":"session_created","session_id":"abc"}"#);
/// assert!(entry_for("notes/abc").is_none());
/// ```
pub fn entry_for(path: &str) -> Option<IndexEntry> {
    let session_id = session_id_of(path)?;
    let event = IndexEvent::SessionCreated {
        session_id: session_id.to_owned(),
    };
    Some(IndexEntry {
        path: SESSION_INDEX_PATH.into(),
        json: Bytes::from(event.to_json()),
    })
}
