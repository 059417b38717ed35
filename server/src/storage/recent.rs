//! Reads served from memory: live readers usually want what was just
//! appended, and the change hub keeps the last appends of every watched
//! stream ([`ChangeHub::recent`]). Every backend tries this before its store.

use super::meta::Touches;
use super::{Chunk, Expiry, Read, rules};
use crate::changes::ChangeHub;
use crate::offset::{Pos, StartAt};

/// The chunk `req` asks for, if the hub's recent appends hold it and the
/// stream has not expired; a read renews a sliding TTL in `touches`.
pub fn read_recent(hub: &ChangeHub, touches: &Touches, req: &Read) -> Option<Chunk> {
    let StartAt::Pos(from) = req.from else { return None };
    let recent = hub.recent(&req.path, from, req.max_bytes)?;
    let now = rules::now_ms();
    let touched = touches.get(recent.info.id).unwrap_or(0).max(recent.touched_ms);
    if rules::is_expired(recent.info.expiry, touched, now) {
        return None;
    }
    if matches!(recent.info.expiry, Expiry::Ttl(_)) {
        touches.touch(recent.info.id, now);
    }
    // Recent appends are all in the stream's newest incarnation (`from` is
    // between two of their offsets), where offsets count positions.
    let json = recent.info.is_json();
    let mut end = from;
    let offsets = recent
        .pieces
        .iter()
        .map(|piece| {
            end += if json { 1 } else { piece.len() as Pos };
            end
        })
        .collect();
    Some(Chunk {
        info: recent.info,
        start: from,
        next: recent.next,
        pieces: recent.pieces,
        offsets,
    })
}
