//! The session index: a JSON stream ([`SESSION_INDEX_PATH`]) that lists every
//! session stream as it is created, so agents discover sessions by
//! subscribing to one stream instead of needing a handshake with each client.

use bytes::Bytes;
use durable_session_protocol::session::{IndexEvent, SESSION_INDEX_PATH, session_id_of};

use crate::storage::{Append, CreateStream, Expiry, Storage, StoreResult};

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
        })
        .await
        .map(|_| ())
}

/// Records a newly created stream in the index if it is a session.
pub async fn record(storage: &dyn Storage, path: &str) {
    let Some(session_id) = session_id_of(path) else {
        return;
    };
    let event = IndexEvent::SessionCreated {
        session_id: session_id.to_owned(),
    };
    let body = event.to_json();
    let result = storage
        .append(Append {
            path: SESSION_INDEX_PATH.into(),
            content_type: Some("application/json".into()),
            body: body.into(),
            close: false,
            stream_seq: None,
            producer: None,
        })
        .await;
    if let Err(e) = result {
        tracing::warn!(%path, error = %e, "could not record the session in the index");
    }
}
