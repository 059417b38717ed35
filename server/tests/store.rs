//! The storage contract, run against every store: the same tests on SQLite
//! (a real database in a temp dir) and on Redis (a real redis-server, see
//! `common::redis`), through the `Storage` trait the server uses.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::redis::RedisServer;
use durable_session_server::changes::ChangeHub;
use durable_session_server::live_read::LiveRead;
use durable_session_server::metrics::Metrics;
use durable_session_server::offset::{Pos, StartAt, ZERO, format_offset};
use durable_session_server::storage::redis::{RedisOptions, RedisStorage};
use durable_session_server::storage::sqlite::SqliteStorage;
use durable_session_server::storage::{
    Append, Appended, Chunk, CreateStream, Expiry, ForkFrom, IndexEntry, Producer, Read, Storage, StoreError, rules,
};

/// A store, and what keeps it alive.
struct Store {
    s: Arc<dyn Storage>,
    _dir: Option<tempfile::TempDir>,
    _redis: Option<RedisServer>,
}

async fn sqlite() -> Store {
    let dir = tempfile::tempdir().unwrap();
    Store {
        s: Arc::new(SqliteStorage::open(dir.path()).unwrap()),
        _dir: Some(dir),
        _redis: None,
    }
}

async fn redis() -> Store {
    let redis = RedisServer::start();
    let storage = RedisStorage::connect(RedisOptions::new(redis.url()), ChangeHub::new(), Metrics::new())
        .await
        .unwrap();
    Store {
        s: Arc::new(storage),
        _dir: None,
        _redis: Some(redis),
    }
}

/// Each test, once per store.
macro_rules! on_every_store {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test(super::sqlite().await).await
            })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test(super::redis().await).await
            })*
        }
    };
}

on_every_store!(
    json_messages_and_offsets,
    reads_are_bounded_and_resume,
    idempotent_producers,
    stream_seq_and_content_types,
    closing,
    repeated_put,
    delete_and_create_again,
    forks,
    a_byte_fork_inside_an_append,
    expiry,
    a_feed_wakes_on_append,
    live_read_catches_up_then_follows,
    a_stream_and_its_index_entry_together,
    subscription_documents,
    listing_streams_by_prefix,
);

const JSON: &str = "application/json";
const TEXT: &str = "text/plain";

fn create_req(path: &str, content_type: &str, body: &str) -> CreateStream {
    CreateStream {
        path: path.into(),
        content_type: Some(content_type.into()),
        expiry: Expiry::Never,
        closed: false,
        body: Bytes::from(body.to_owned()),
        fork: None,
        index_entry: None,
    }
}

fn append_req(path: &str, content_type: &str, body: &str) -> Append {
    Append {
        path: path.into(),
        content_type: Some(content_type.into()),
        body: Bytes::from(body.to_owned()),
        close: false,
        stream_seq: None,
        producer: None,
    }
}

fn produced(path: &str, body: &str, epoch: u64, seq: u64) -> Append {
    Append {
        producer: Some(Producer {
            id: "writer".into(),
            epoch,
            seq,
        }),
        ..append_req(path, JSON, body)
    }
}

async fn create(st: &Store, path: &str, content_type: &str, body: &str) {
    let created = st.s.create(create_req(path, content_type, body)).await.unwrap();
    assert!(created.created, "{path} created");
}

async fn append(st: &Store, req: Append) -> Appended {
    st.s.append(req).await.unwrap()
}

async fn read(st: &Store, path: &str, from: StartAt, max_bytes: usize) -> Result<Chunk, StoreError> {
    st.s.read(Read {
        path: path.into(),
        from,
        max_bytes,
    })
    .await
}

/// Everything from `from` to the tail, in reads of about `max_bytes`.
async fn read_all(st: &Store, path: &str, from: StartAt, max_bytes: usize) -> (Vec<String>, Vec<Pos>, usize) {
    let (mut pieces, mut offsets, mut reads) = (Vec::new(), Vec::new(), 0);
    let mut from = from;
    loop {
        let chunk = read(st, path, from, max_bytes).await.unwrap();
        reads += 1;
        pieces.extend(chunk.pieces.iter().map(|p| String::from_utf8(p.to_vec()).unwrap()));
        offsets.extend(&chunk.offsets);
        if chunk.up_to_date() {
            return (pieces, offsets, reads);
        }
        assert!(reads < 10_000, "reads make progress");
        from = StartAt::Pos(chunk.next);
    }
}

async fn json_messages_and_offsets(st: Store) {
    create(&st, "j", JSON, "[1,2]").await;
    append(&st, append_req("j", JSON, r#"[[3],{"a":4}]"#)).await;
    let last = append(&st, append_req("j", JSON, "5")).await;
    let (pieces, offsets, _) = read_all(&st, "j", StartAt::Beginning, 1 << 20).await;
    assert_eq!(pieces, ["1", "2", "[3]", r#"{"a":4}"#, "5"], "arrays flatten one level");
    assert_eq!(offsets.last(), Some(&last.info.tail));
    for pair in offsets.windows(2) {
        assert!(
            format_offset(pair[0]) < format_offset(pair[1]),
            "offsets sort as strings"
        );
    }
    let (rest, _, _) = read_all(&st, "j", StartAt::Pos(offsets[1]), 1 << 20).await;
    assert_eq!(rest, ["[3]", r#"{"a":4}"#, "5"]);
    let now = read(&st, "j", StartAt::Now, 1 << 20).await.unwrap();
    assert!(now.pieces.is_empty() && now.up_to_date());
    assert_eq!(
        read(&st, "j", StartAt::Pos(last.info.tail + 1), 1 << 20)
            .await
            .unwrap_err(),
        StoreError::OffsetBeyondTail
    );
    for bad in ["[]", "{", "[1,]"] {
        let err = st.s.append(append_req("j", JSON, bad)).await.unwrap_err();
        assert!(matches!(err, StoreError::BadRequest(_)), "{bad}: {err:?}");
    }
    assert_eq!(
        read_all(&st, "j", StartAt::Beginning, 1 << 20).await.0.len(),
        5,
        "nothing stored by bad input"
    );
    assert_eq!(
        read(&st, "missing", StartAt::Beginning, 1).await.unwrap_err(),
        StoreError::NotFound
    );
}

async fn reads_are_bounded_and_resume(st: Store) {
    create(&st, "many", JSON, "[]").await;
    let message = format!("\"{}\"", "m".repeat(98)); // 100 bytes
    for _ in 0..10 {
        let batch = [message.as_str(); 10].join(",");
        append(&st, append_req("many", JSON, &format!("[{batch}]"))).await;
    }
    let first = read(&st, "many", StartAt::Beginning, 1_000).await.unwrap();
    assert!(
        (10..=11).contains(&first.pieces.len()),
        "about 1000 bytes: {}",
        first.pieces.len()
    );
    assert!(!first.up_to_date());
    let (all, _, reads) = read_all(&st, "many", StartAt::Beginning, 1_000).await;
    assert_eq!((all.len(), reads), (100, 10));

    create(&st, "bytes", TEXT, "").await;
    for i in 0..5 {
        append(&st, append_req("bytes", TEXT, &i.to_string().repeat(1_000))).await;
    }
    let (runs, _, reads) = read_all(&st, "bytes", StartAt::Beginning, 1).await;
    assert_eq!(reads, 5, "at least one piece per read, however small the budget");
    assert_eq!(runs.concat().len(), 5_000);
    // From inside a byte run: the rest of it.
    let chunk = read(&st, "bytes", StartAt::Pos(first_offset(&st, "bytes").await + 500), 1)
        .await
        .unwrap();
    assert_eq!(chunk.pieces.concat(), "0".repeat(500).as_bytes());
}

/// The offset of position 0 of stream `path`.
async fn first_offset(st: &Store, path: &str) -> Pos {
    read(st, path, StartAt::Beginning, 1).await.unwrap().start
}

async fn idempotent_producers(st: Store) {
    create(&st, "p", JSON, "").await;
    let a = append(&st, produced("p", "1", 0, 0)).await;
    assert!(!a.duplicate);
    assert_eq!(a.producer, Some((0, 0)));
    let dup = append(&st, produced("p", "1", 0, 0)).await;
    assert!(dup.duplicate, "a retry is acknowledged, not stored");
    assert_eq!(dup.info.tail, a.info.tail);
    assert_eq!(
        st.s.append(produced("p", "3", 0, 2)).await.unwrap_err(),
        StoreError::SeqGap {
            expected: 1,
            received: 2
        }
    );
    append(&st, produced("p", "2", 0, 1)).await;
    append(&st, produced("p", "10", 1, 0)).await;
    assert_eq!(
        st.s.append(produced("p", "x", 0, 2)).await.unwrap_err(),
        StoreError::StaleEpoch { current: 1 }
    );
    assert!(matches!(
        st.s.append(produced("p", "x", 2, 1)).await.unwrap_err(),
        StoreError::BadRequest(_)
    ));
    assert_eq!(
        read_all(&st, "p", StartAt::Beginning, 1 << 20).await.0,
        ["1", "2", "10"]
    );
}

async fn stream_seq_and_content_types(st: Store) {
    create(&st, "s", JSON, "").await;
    let seq = |s: &str| Append {
        stream_seq: Some(s.into()),
        ..append_req("s", JSON, "1")
    };
    append(&st, seq("b")).await;
    assert_eq!(
        st.s.append(seq("a")).await.unwrap_err(),
        StoreError::SeqRegression { last: "b".into() }
    );
    append(&st, seq("c")).await;
    assert_eq!(
        st.s.append(append_req("s", TEXT, "x")).await.unwrap_err(),
        StoreError::ContentTypeMismatch { stream: JSON.into() }
    );
    let untyped = Append {
        content_type: None,
        ..append_req("s", JSON, "1")
    };
    assert!(matches!(
        st.s.append(untyped).await.unwrap_err(),
        StoreError::BadRequest(_)
    ));
}

async fn closing(st: Store) {
    create(&st, "c", JSON, "[1]").await;
    let closed = append(
        &st,
        Append {
            close: true,
            ..produced("c", "2", 0, 0)
        },
    )
    .await;
    assert!(closed.info.closed && !closed.duplicate);
    assert_eq!(
        st.s.append(append_req("c", JSON, "3")).await.unwrap_err(),
        StoreError::Closed { tail: closed.info.tail }
    );
    let retry = Append {
        close: true,
        ..produced("c", "2", 0, 0)
    };
    assert!(append(&st, retry).await.duplicate, "the closing request's retry");
    let close_again = Append {
        close: true,
        ..append_req("c", JSON, "")
    };
    assert!(append(&st, close_again).await.duplicate);
    let chunk = read(&st, "c", StartAt::Beginning, 1 << 20).await.unwrap();
    assert!(chunk.info.closed);
    assert_eq!(chunk.pieces.len(), 2);
}

async fn repeated_put(st: Store) {
    create(&st, "r", JSON, "").await;
    let again =
        st.s.create(create_req("r", "application/json; charset=utf-8", ""))
            .await
            .unwrap();
    assert!(!again.created, "the same configuration confirms the stream");
    assert!(matches!(
        st.s.create(create_req("r", TEXT, "")).await.unwrap_err(),
        StoreError::ConfigMismatch(_)
    ));
    let with_ttl = CreateStream {
        expiry: Expiry::Ttl(60),
        ..create_req("r", JSON, "")
    };
    assert!(matches!(
        st.s.create(with_ttl).await.unwrap_err(),
        StoreError::ConfigMismatch(_)
    ));
}

async fn delete_and_create_again(st: Store) {
    create(&st, "d", JSON, "[1,2,3]").await;
    let (_, old, _) = read_all(&st, "d", StartAt::Beginning, 1 << 20).await;
    st.s.delete("d").await.unwrap();
    assert_eq!(st.s.head("d").await.unwrap_err(), StoreError::NotFound);
    assert_eq!(st.s.delete("d").await.unwrap_err(), StoreError::NotFound);
    create(&st, "d", JSON, "[4,5,6,7]").await;
    let (pieces, new, _) = read_all(&st, "d", StartAt::Beginning, 1 << 20).await;
    assert_eq!(pieces, ["4", "5", "6", "7"]);
    for (o, n) in old.iter().zip(&new) {
        assert!(
            format_offset(*n) > format_offset(*o),
            "a new incarnation sorts after the old"
        );
    }
    for o in old {
        assert_eq!(
            read(&st, "d", StartAt::Pos(o), 1 << 20).await.unwrap_err(),
            StoreError::Gone,
            "an old offset never reads the new stream"
        );
    }
}

fn fork_req(path: &str, source: &str, offset: Option<Pos>, sub_offset: u64) -> CreateStream {
    CreateStream {
        content_type: None,
        fork: Some(ForkFrom {
            source: source.into(),
            offset,
            sub_offset,
        }),
        ..create_req(path, JSON, "")
    }
}

async fn forks(st: Store) {
    create(&st, "src", JSON, "[1,2,3]").await;
    let (_, src_offsets, _) = read_all(&st, "src", StartAt::Beginning, 1 << 20).await;
    let fork =
        st.s.create(fork_req("fork", "src", Some(src_offsets[1]), 0))
            .await
            .unwrap();
    assert!(fork.created);
    assert_eq!(fork.info.tail, src_offsets[1], "the fork point is the source's offset");
    assert!(fork.info.is_json(), "the source's content type");
    let own = append(&st, append_req("fork", JSON, "9")).await;
    let (pieces, offsets, _) = read_all(&st, "fork", StartAt::Beginning, 1 << 20).await;
    assert_eq!(pieces, ["1", "2", "9"]);
    assert_eq!(&offsets[..2], &src_offsets[..2], "inherited data keeps its offsets");
    assert!(format_offset(own.info.tail) > format_offset(src_offsets[2]));
    assert_eq!(
        read(&st, "fork", StartAt::Pos(src_offsets[2]), 1 << 20)
            .await
            .unwrap_err(),
        StoreError::Gone,
        "the source's data past the fork point is not the fork's"
    );
    // Resuming inside the inherited part, one message per read.
    let (rest, _, reads) = read_all(&st, "fork", StartAt::Pos(src_offsets[0]), 1).await;
    assert_eq!((rest, reads), (vec!["2".to_owned(), "9".to_owned()], 2));
    assert!(
        !st.s
            .create(fork_req("fork", "src", Some(src_offsets[1]), 0))
            .await
            .unwrap()
            .created
    );
    assert_eq!(
        st.s.create(fork_req("other", "nope", None, 0)).await.unwrap_err(),
        StoreError::ForkSourceNotFound
    );

    // The source, deleted, stays for its fork (and keeps its path)…
    st.s.delete("src").await.unwrap();
    assert_eq!(st.s.head("src").await.unwrap_err(), StoreError::Gone);
    assert_eq!(
        st.s.create(fork_req("other", "src", None, 0)).await.unwrap_err(),
        StoreError::ForkSourceGone
    );
    assert!(matches!(
        st.s.create(create_req("src", JSON, "")).await.unwrap_err(),
        StoreError::ConfigMismatch(_)
    ));
    assert_eq!(
        read_all(&st, "fork", StartAt::Beginning, 1 << 20).await.0,
        ["1", "2", "9"]
    );
    // …until the fork goes too.
    st.s.delete("fork").await.unwrap();
    create(&st, "src", JSON, "").await;
}

async fn a_byte_fork_inside_an_append(st: Store) {
    create(&st, "text", TEXT, "hello world").await;
    let fork = st.s.create(fork_req("hello", "text", Some(ZERO), 5)).await.unwrap();
    assert!(fork.created);
    append(&st, append_req("hello", TEXT, " there")).await;
    for max_bytes in [1 << 20, 1] {
        let (runs, _, _) = read_all(&st, "hello", StartAt::Beginning, max_bytes).await;
        assert_eq!(runs.concat(), "hello there", "reads of {max_bytes} bytes");
    }
    let from_2 = read(&st, "hello", StartAt::Pos(first_offset(&st, "text").await + 2), 1 << 20)
        .await
        .unwrap();
    assert_eq!(from_2.pieces.concat(), b"llo there");
}

async fn expiry(st: Store) {
    let deadline = rules::now_ms() + 300;
    let expiring = CreateStream {
        expiry: Expiry::At(deadline),
        ..create_req("e", JSON, "[1]")
    };
    st.s.create(expiring.clone()).await.unwrap();
    assert!(st.s.head("e").await.is_ok());
    let give_up = Instant::now() + Duration::from_secs(5);
    while st.s.head("e").await.is_ok() {
        assert!(Instant::now() < give_up, "expired within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rules::now_ms() >= deadline, "not before its time");
    assert_eq!(
        st.s.append(append_req("e", JSON, "2")).await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        read(&st, "e", StartAt::Beginning, 1).await.unwrap_err(),
        StoreError::NotFound
    );
    let again = st.s.create(create_req("e", JSON, "")).await.unwrap();
    assert!(again.created, "an expired path is free again");
}

async fn a_feed_wakes_on_append(st: Store) {
    let mut feed = st.s.changes("live");
    create(&st, "live", JSON, "").await;
    assert!(feed.wait(Duration::from_secs(5)).await, "woken by the creation");
    assert!(!feed.wait(Duration::from_millis(50)).await, "nothing else yet");
    let tail = read(&st, "live", StartAt::Now, 1).await.unwrap().next;
    append(&st, append_req("live", JSON, r#"{"n":1}"#)).await;
    assert!(feed.wait(Duration::from_secs(5)).await, "woken by the append");
    let chunk = read(&st, "live", StartAt::Pos(tail), 1 << 20).await.unwrap();
    assert_eq!(chunk.pieces, [Bytes::from_static(br#"{"n":1}"#)]);
}

/// The one catch-up→live reader (WebSocket, SSE and long-poll use it) on
/// each store: stored messages in bounded chunks, an empty answer at the
/// tail once its deadline passes, an append made while it waits, and the
/// end of the stream once closed — each message exactly once, in order.
async fn live_read_catches_up_then_follows(st: Store) {
    create(&st, "follow", JSON, r#"[{"n":1},{"n":2},{"n":3}]"#).await;
    let mut live = LiveRead::new(st.s.clone(), "follow".into(), StartAt::Beginning, 1);
    let now = tokio::time::Instant::now;
    let mut got = Vec::new();
    loop {
        let chunk = live.next_until(now()).await.unwrap();
        if chunk.pieces.is_empty() {
            assert!(chunk.up_to_date() && !chunk.info.closed, "empty only at the open tail");
            break;
        }
        got.extend(chunk.pieces);
    }
    assert_eq!(got, [&br#"{"n":1}"#[..], br#"{"n":2}"#, br#"{"n":3}"#]);

    let quiet = live.next_until(now() + Duration::from_millis(30)).await.unwrap();
    assert!(quiet.pieces.is_empty(), "nothing new before the deadline");

    let writer = {
        let s = st.s.clone();
        tokio::spawn(async move {
            s.append(append_req("follow", JSON, r#"{"n":4}"#)).await.unwrap();
        })
    };
    let woken = live.next_until(now() + Duration::from_secs(10)).await.unwrap();
    assert_eq!(woken.pieces, [Bytes::from_static(br#"{"n":4}"#)], "woken by the append");
    writer.await.unwrap();

    let close = Append {
        close: true,
        ..append_req("follow", JSON, "")
    };
    st.s.append(close).await.unwrap();
    let end = live.next_until(now() + Duration::from_secs(10)).await.unwrap();
    assert!(
        end.pieces.is_empty() && end.info.closed && end.up_to_date(),
        "the end of the stream"
    );
}

async fn a_stream_and_its_index_entry_together(st: Store) {
    let indexed = |id: &str| CreateStream {
        index_entry: Some(IndexEntry {
            path: "_index/test".into(),
            json: Bytes::from(format!(r#"{{"id":"{id}"}}"#)),
        }),
        ..create_req(&format!("sessions/{id}"), JSON, "")
    };
    assert!(st.s.create(indexed("a")).await.unwrap().created);
    let entries = || read_all(&st, "_index/test", StartAt::Beginning, 1 << 20);
    assert_eq!(
        entries().await.0,
        [r#"{"id":"a"}"#],
        "the index is created with the first entry"
    );
    assert!(!st.s.create(indexed("a")).await.unwrap().created);
    assert!(st.s.create(indexed("b")).await.unwrap().created);
    assert_eq!(entries().await.0.len(), 2, "an existing stream is not indexed again");

    // An index that takes no more entries: the stream is not created either.
    let close = Append {
        close: true,
        ..append_req("_index/test", JSON, "")
    };
    append(&st, close).await;
    assert!(matches!(
        st.s.create(indexed("c")).await.unwrap_err(),
        StoreError::Internal(_)
    ));
    assert_eq!(st.s.head("sessions/c").await.unwrap_err(), StoreError::NotFound);
    assert_eq!(entries().await.0.len(), 2);
}

/// Subscription documents: stored, replaced, listed and removed; they are
/// not streams.
async fn subscription_documents(st: Store) {
    assert!(st.s.subscriptions().await.unwrap().is_empty());
    st.s.put_subscription("a", Bytes::from_static(b"{\"v\":1}"))
        .await
        .unwrap();
    st.s.put_subscription("b", Bytes::from_static(b"{\"v\":2}"))
        .await
        .unwrap();
    st.s.put_subscription("a", Bytes::from_static(b"{\"v\":3}"))
        .await
        .unwrap();
    let mut all = st.s.subscriptions().await.unwrap();
    all.sort();
    assert_eq!(
        all,
        vec![
            ("a".to_owned(), Bytes::from_static(b"{\"v\":3}")),
            ("b".to_owned(), Bytes::from_static(b"{\"v\":2}")),
        ]
    );
    assert_eq!(st.s.head("a").await.unwrap_err(), StoreError::NotFound);
    st.s.delete_subscription("a").await.unwrap();
    st.s.delete_subscription("absent").await.unwrap();
    assert_eq!(
        st.s.subscriptions().await.unwrap(),
        vec![("b".to_owned(), Bytes::from_static(b"{\"v\":2}"))]
    );
}

/// Listing live streams under a prefix (subscription backfill): deleted
/// ones are left out, the limit holds, glob characters are literal.
async fn listing_streams_by_prefix(st: Store) {
    for path in ["ev/a", "ev/b", "ev/c", "evx", "other/a", "ev*/z"] {
        create(&st, path, "application/json", "[]").await;
    }
    append(&st, append_req("ev/b", "application/json", "{}")).await;
    st.s.delete("ev/c").await.unwrap();
    let mut got: Vec<(String, Pos)> =
        st.s.list_streams("ev/", 100)
            .await
            .unwrap()
            .into_iter()
            .map(|(p, i)| (p, i.tail))
            .collect();
    got.sort();
    let tail_b = st.s.head("ev/b").await.unwrap().tail;
    let tail_a = st.s.head("ev/a").await.unwrap().tail;
    assert_eq!(got, vec![("ev/a".to_owned(), tail_a), ("ev/b".to_owned(), tail_b)]);
    assert_eq!(
        st.s.list_streams("ev", 100).await.unwrap().len(),
        4,
        "ev/a, ev/b, evx, ev*/z"
    );
    assert_eq!(st.s.list_streams("", 2).await.unwrap().len(), 2);
    let star: Vec<String> =
        st.s.list_streams("ev*", 100)
            .await
            .unwrap()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
    assert_eq!(star, vec!["ev*/z".to_owned()]);
}
