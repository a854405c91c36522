//! The `Store` contract, run against both backends.

use std::sync::Arc;
use std::time::Duration;

use authmd::Timestamp;
use authmd::audit::{AuditEvent, EventFilter, EventKind, RequestMeta};
use authmd::rate_limit::RateLimit;
use authmd::register::{RegistrationStatus, RegistrationType};
use authmd::store::{NewAnonymousRegistration, Store};
use authmd::token::{PlainSecret, SecretKind, new_id};

use crate::both_backends;
use crate::support::{Backend, TestDb};

fn anonymous(now: Timestamp) -> (NewAnonymousRegistration, PlainSecret) {
    let id = new_id("reg_");
    let credential_id = new_id("crd_");
    let key = PlainSecret::generate(SecretKind::ApiKey, &credential_id);
    let meta = RequestMeta::new(Some([192, 0, 2, 1].into()), Some("contract"));
    let reg = NewAnonymousRegistration {
        registration_id: id.clone(),
        claim_token: PlainSecret::generate(SecretKind::ClaimToken, &id).hash(),
        credential_id,
        credential: key.hash(),
        scopes: vec!["api.read".into()],
        created_at: now,
        expires_at: now.plus(Duration::from_secs(3600)),
        events: vec![
            AuditEvent::new(EventKind::RegistrationCreated, now, &meta).registration(&id),
            AuditEvent::new(EventKind::CredentialIssued, now, &meta).registration(&id),
        ],
    };
    (reg, key)
}

both_backends! {
    async fn created_registrations_are_found_by_credential_hash(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let now = Timestamp::from_secs(1_800_000_000);
        let (reg, key) = anonymous(now);
        let id = reg.registration_id.clone();
        let credential_id = reg.credential_id.clone();
        assert_eq!(store.create_anonymous_registration(reg, vec![]).await, Ok(Ok(())));
        let found = store.find_credential(&credential_id).await.ok().flatten();
        let found = found.unwrap_or_else(|| panic!("not found"));
        assert_eq!(found.registration_id, id);
        assert_eq!(found.registration_type, RegistrationType::Anonymous);
        assert_eq!(found.registration_status, RegistrationStatus::Unclaimed);
        assert_eq!(found.scopes, vec!["api.read".to_owned()]);
        assert_eq!(found.issued_at, now);
        assert_eq!(found.registration_expires_at, Some(now.plus(Duration::from_secs(3600))));
        assert_eq!(found.user, None);
        assert_eq!(found.secret_hash, key.hash());
        assert_eq!(found.credential_id, credential_id);
        assert_eq!(store.find_credential(&new_id("crd_")).await, Ok(None));
        // Migrating again is a no-op.
        store.migrate().await.unwrap_or_else(|e| panic!("{e}"));
    }
}

both_backends! {
    async fn a_refused_limit_writes_nothing(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let now = Timestamp::from_secs(1_800_000_000);
        let limits = || vec![RateLimit::per_hour("ip:x", 1), RateLimit::per_hour("all", 10)];
        assert_eq!(store.create_anonymous_registration(anonymous(now).0, limits()).await, Ok(Ok(())));
        let refused = store.create_anonymous_registration(anonymous(now).0, limits()).await;
        assert!(matches!(refused, Ok(Err(r)) if r.retry_after == Duration::from_secs(3600)), "{refused:?}");
        let stats = store.stats().await.unwrap_or_default();
        assert_eq!((stats.registrations, stats.credentials, stats.audit_events), (1, 1, 2));
        // The refused request did not count against the service-wide limit:
        // nine more fit.
        for i in 0..9 {
            let l = vec![RateLimit::per_hour(format!("ip:{i}"), 1), RateLimit::per_hour("all", 10)];
            assert_eq!(store.create_anonymous_registration(anonymous(now).0, l).await, Ok(Ok(())), "{i}");
        }
        let l = vec![RateLimit::per_hour("ip:y", 1), RateLimit::per_hour("all", 10)];
        assert!(matches!(store.create_anonymous_registration(anonymous(now).0, l).await, Ok(Err(_))));
    }
}

both_backends! {
    /// Group commit (SQLite) and the pool (PostgreSQL) under concurrency:
    /// every registration is committed exactly once.
    async fn concurrent_registrations_all_commit(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let now = Timestamp::now();
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let (reg, key) = anonymous(now);
                store.create_anonymous_registration(reg, vec![]).await.map(|_| key)
            }));
        }
        let mut keys = Vec::new();
        for t in tasks {
            keys.push(t.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}")));
        }
        let stats = store.stats().await.unwrap_or_default();
        assert_eq!((stats.registrations, stats.credentials, stats.audit_events), (200, 200, 400));
        for k in keys.iter().take(20) {
            let id = authmd::token::recognize(k.expose(), &[SecretKind::ApiKey]).map(|p| p.id());
            let found = store.find_credential(&id.unwrap_or_default()).await.ok().flatten();
            assert_eq!(found.map(|f| f.secret_hash), Some(k.hash()));
        }
    }
}

both_backends! {
    async fn events_are_filtered_and_paged(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let t0 = Timestamp::from_secs(1_800_000_000);
        let meta = RequestMeta::new(Some([192, 0, 2, 9].into()), Some("ua"));
        for i in 0..10i64 {
            let at = Timestamp::from_secs(1_800_000_000 + i);
            let kind = if i % 2 == 0 { EventKind::RegistrationRejected } else { EventKind::RegistrationCreated };
            let e = AuditEvent::new(kind, at, &meta).registration(&format!("reg_{i}")).with("n", i);
            store.record_event(e).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let list = |f: EventFilter| {
            let store = Arc::clone(&store);
            async move { store.list_events(&f).await.unwrap_or_default() }
        };
        let all = list(EventFilter { limit: 100, ..Default::default() }).await;
        assert_eq!(all.len(), 10);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(all[3].data["n"], 3);
        assert_eq!(all[3].ip.as_deref(), Some("192.0.2.9"));
        assert_eq!(all[3].user_agent.as_deref(), Some("ua"));

        let rejected = list(EventFilter { events: vec!["registration.rejected".into()], limit: 100, ..Default::default() }).await;
        assert_eq!(rejected.len(), 5);
        let window = list(EventFilter {
            since: Some(t0.plus(Duration::from_secs(2))),
            until: Some(t0.plus(Duration::from_secs(5))),
            limit: 100,
            ..Default::default()
        })
        .await;
        assert_eq!(window.iter().map(|e| e.data["n"].as_i64().unwrap_or(-1)).collect::<Vec<_>>(), [2, 3, 4]);
        let one = list(EventFilter { registration_id: Some("reg_7".into()), limit: 100, ..Default::default() }).await;
        assert_eq!(one.len(), 1);
        let page1 = list(EventFilter { limit: 4, ..Default::default() }).await;
        let page2 = list(EventFilter { limit: 4, after_id: page1.last().map(|e| e.id), ..Default::default() }).await;
        assert_eq!(page1.len() + page2.len(), 8);
        assert_eq!(page2[0].data["n"], 4);
    }
}

/// The `n` of each event the live tail yields after the first event
/// recorded, polled as a collector polls it until `want` have come or 20 s
/// have passed: PostgreSQL's tail stops below the oldest transaction
/// running on the server (another test's, say).
async fn tail_after_first(store: &dyn Store, f: &EventFilter, want: usize) -> Vec<i64> {
    let first = store
        .list_events(&EventFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    let mut cursor = authmd::store::TailCursor {
        tx: 0,
        id: first.first().map_or(0, |e| e.id),
    };
    let mut tailed = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tailed.len() < want && std::time::Instant::now() < deadline {
        let (found, next) = store
            .tail_events(cursor, f)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tailed.extend(
            found
                .iter()
                .map(|(_, e)| e.data["n"].as_i64().unwrap_or(-1)),
        );
        cursor = next;
        if found.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tailed
}

/// Records event number `i` (`data.n`) of `registration`, at
/// 1,800,000,000 + `i` seconds.
/// The `i`-th of a run of operator events, `i` seconds after `t0`.
fn numbered_event(t0: Timestamp, i: u64) -> AuditEvent {
    AuditEvent::new(
        EventKind::OperatorAction,
        t0.plus(Duration::from_secs(i)),
        &RequestMeta::default(),
    )
    .with("n", i)
}

async fn record_nth(store: &dyn Store, kind: EventKind, registration: String, i: i64) {
    let e = AuditEvent::new(
        kind,
        Timestamp::from_secs(1_800_000_000 + i),
        &RequestMeta::default(),
    )
    .registration(&registration)
    .with("n", i);
    store
        .record_event(e)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The audit purge of the events before `t0` + 4 s (four of them), and on
/// SQLite, of their entries in the deferred index `table` with them.
async fn purge_before_4s(
    backend: Backend,
    db: &TestDb,
    store: &dyn Store,
    t0: Timestamp,
    table: &str,
) {
    let purged = store
        .purge_audit(t0.plus(Duration::from_secs(4)), 1000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(purged, 4);
    if backend == Backend::Sqlite {
        let orphans = format!("{table} WHERE event_id NOT IN (SELECT id FROM audit_events)");
        assert_eq!(
            db.rows(&orphans).await,
            0,
            "the purged events' entries are gone"
        );
        assert!(db.rows(table).await >= 3, "the others' are kept");
    }
}

both_backends! {
    /// A registration's events are listed whole, in id order and page by
    /// page, whether they are in SQLite's registration index yet or only
    /// after its point (migration 0015: the writer adds them about once a
    /// second), and across that point; the audit purge takes their index
    /// entries with them.
    async fn a_registrations_events_are_listed_across_the_indexing_point(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let t0 = Timestamp::from_secs(1_800_000_000);
        let s = store.as_ref();
        let record = |i: i64| record_nth(s, EventKind::RegistrationCreated, if i % 3 == 0 { "reg_b" } else { "reg_a" }.into(), i);
        let of_a = |after_id: Option<i64>, limit: u32| {
            let store = Arc::clone(&store);
            async move {
                let f = EventFilter { registration_id: Some("reg_a".into()), after_id, limit, ..Default::default() };
                let found = store.list_events(&f).await.unwrap_or_else(|e| panic!("{e}"));
                found.iter().map(|e| e.data["n"].as_i64().unwrap_or(-1)).collect::<Vec<_>>()
            }
        };
        let expected = |upto: i64| (0..upto).filter(|i| i % 3 != 0).collect::<Vec<_>>();
        for i in 0..6 {
            record(i).await;
        }
        assert_eq!(of_a(None, 100).await, expected(6), "before any indexing");
        // The writer indexes after a commit once a second has passed.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        record(6).await;
        for i in 7..12 {
            record(i).await;
        }
        if backend == Backend::Sqlite {
            // 0 to 6 at least (all, had the writer stalled for a second).
            assert!(db.rows("audit_events_by_registration").await >= 7, "indexed");
        }
        assert_eq!(of_a(None, 100).await, expected(12), "indexed and not yet indexed");
        // Page by page, three at a time, across the point.
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let f = EventFilter { registration_id: Some("reg_a".into()), after_id: after, limit: 3, ..Default::default() };
            let page = store.list_events(&f).await.unwrap_or_else(|e| panic!("{e}"));
            if page.is_empty() {
                break;
            }
            after = page.last().map(|e| e.id);
            paged.extend(page.iter().map(|e| e.data["n"].as_i64().unwrap_or(-1)));
        }
        assert_eq!(paged, expected(12));
        // The live tail with the registration filter, from the first event
        // (reg_b's): its own cursor decides where it starts, whatever
        // `after_id` the filter carries.
        let f = EventFilter { registration_id: Some("reg_a".into()), after_id: Some(i64::MAX), limit: 100, ..Default::default() };
        let tailed = tail_after_first(store.as_ref(), &f, expected(12).len()).await;
        assert_eq!(tailed, expected(12), "the tail across the point");
        let b = EventFilter { registration_id: Some("reg_b".into()), events: vec!["registration.created".into()], limit: 100, ..Default::default() };
        assert_eq!(store.list_events(&b).await.unwrap_or_default().len(), 4);

        // The purge: events before t0 + 4 s go, with their index entries.
        purge_before_4s(backend, &db, store.as_ref(), t0, "audit_events_by_registration").await;
        assert_eq!(of_a(None, 100).await, expected(12).into_iter().filter(|&i| i >= 4).collect::<Vec<_>>());
    }
}

both_backends! {
    /// The events of a kind are listed whole, in id order and page by page,
    /// whether they are in SQLite's table of kinds yet or only after its
    /// point (migration 0016: the writer adds them about once a second),
    /// alone, with another kind, with a registration or a time window, and
    /// through the live tail; the audit purge takes their entries with them.
    async fn a_kinds_events_are_listed_across_the_indexing_point(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let t0 = Timestamp::from_secs(1_800_000_000);
        let s = store.as_ref();
        let record = |i: i64| {
            let kind = if i % 2 == 0 { EventKind::RegistrationCreated } else { EventKind::CredentialIssued };
            record_nth(s, kind, format!("reg_{i}"), i)
        };
        let list = |f: EventFilter| {
            let store = Arc::clone(&store);
            async move {
                let found = store.list_events(&f).await.unwrap_or_else(|e| panic!("{e}"));
                found.iter().map(|e| e.data["n"].as_i64().unwrap_or(-1)).collect::<Vec<_>>()
            }
        };
        let created = || EventFilter { events: vec!["registration.created".into()], limit: 100, ..Default::default() };
        let even = |upto: i64| (0..upto).filter(|i| i % 2 == 0).collect::<Vec<_>>();
        for i in 0..6 {
            record(i).await;
        }
        assert_eq!(list(created()).await, even(6), "before any indexing");
        // The writer indexes after a commit once a second has passed.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        for i in 6..12 {
            record(i).await;
        }
        if backend == Backend::Sqlite {
            // 0 to 6 at least (all, had the writer stalled for a second).
            assert!(db.rows("audit_events_by_kind").await >= 7, "indexed");
        }
        assert_eq!(list(created()).await, even(12), "indexed and not yet indexed");
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list_events(&EventFilter { after_id: after, limit: 2, ..created() })
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            if page.is_empty() {
                break;
            }
            after = page.last().map(|e| e.id);
            paged.extend(page.iter().map(|e| e.data["n"].as_i64().unwrap_or(-1)));
        }
        assert_eq!(paged, even(12), "page by page across the point");
        // Named twice, a kind counts once.
        let both = EventFilter { events: vec!["registration.created".into(), "credential.issued".into(), "registration.created".into()], limit: 100, ..Default::default() };
        assert_eq!(list(both.clone()).await, (0..12).collect::<Vec<_>>(), "two kinds, in id order");
        assert_eq!(list(EventFilter { limit: 5, ..both }).await, (0..5).collect::<Vec<_>>());
        let window = EventFilter { since: Some(t0.plus(Duration::from_secs(3))), until: Some(t0.plus(Duration::from_secs(9))), ..created() };
        assert_eq!(list(window).await, [4, 6, 8]);
        let of_reg = |r: &str| EventFilter { registration_id: Some(r.into()), ..created() };
        // A registration and a kind: indexed (2, 1) and not yet (8, 9).
        assert_eq!(list(of_reg("reg_2")).await, [2]);
        assert_eq!(list(of_reg("reg_1")).await, Vec::<i64>::new(), "reg_1's event is of the other kind");
        assert_eq!(list(of_reg("reg_8")).await, [8]);
        assert_eq!(list(of_reg("reg_9")).await, Vec::<i64>::new());
        // The live tail with a kind, from the first event (0, of that
        // kind: the tail starts after it).
        let tailed = tail_after_first(store.as_ref(), &created(), even(12).len() - 1).await;
        assert_eq!(tailed, even(12)[1..], "the tail across the point");

        // The purge: events before t0 + 4 s go, with their entries.
        purge_before_4s(backend, &db, store.as_ref(), t0, "audit_events_by_kind").await;
        assert_eq!(list(created()).await, [4, 6, 8, 10]);
    }
}

both_backends! {
    /// Two sweepers at once expire each registration exactly once.
    async fn concurrent_sweeps_expire_once(backend: Backend) {
        let db = TestDb::new(backend).await;
        let a = db.store().await;
        let b = db.store().await;
        let now = Timestamp::now();
        for _ in 0..50 {
            a.create_anonymous_registration(anonymous(now).0, vec![]).await.ok();
        }
        let later = now.plus(Duration::from_secs(7200));
        let (ra, rb) = tokio::join!(a.expire_registrations(later, 1000), b.expire_registrations(later, 1000));
        let (ra, rb) = (ra.unwrap_or_default(), rb.unwrap_or_default());
        assert_eq!(ra.expired_registrations.len() + rb.expired_registrations.len(), 50);
        assert_eq!(ra.revoked_credentials + rb.revoked_credentials, 50);
        let expired = a
            .list_events(&EventFilter { events: vec!["registration.expired".into()], limit: 1000, ..Default::default() })
            .await
            .unwrap_or_default();
        assert_eq!(expired.len(), 50);
        // Every revoked credential is in the invalidation log, in order.
        let log = a.invalidations_after(0, 1000).await.unwrap_or_default();
        assert_eq!(log.len(), 50);
        assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(a.latest_invalidation().await.ok(), log.last().map(|i| i.seq));
        let tail = a.invalidations_after(log[39].seq, 1000).await.unwrap_or_default();
        assert_eq!(tail.len(), 10);
    }
}

both_backends! {
    async fn purge_forgets_only_what_cannot_matter(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let now = Timestamp::now();
        let limit = || vec![RateLimit::per_hour("k", 1)];
        store.create_anonymous_registration(anonymous(now).0, limit()).await.ok();
        store.expire_registrations(now.plus(Duration::from_secs(3600)), 10).await.ok();
        // Too early: the limit still holds and the log is kept.
        store.purge(now, now.minus(Duration::from_secs(60))).await.ok();
        assert!(matches!(store.create_anonymous_registration(anonymous(now).0, limit()).await, Ok(Err(_))));
        assert_eq!(store.invalidations_after(0, 10).await.unwrap_or_default().len(), 1);
        // An hour on, the rate-limit state is gone, which is the same as fresh.
        let later = now.plus(Duration::from_secs(3601));
        let purged = store.purge(later, later).await.unwrap_or(0);
        assert_eq!(purged, 2);
        assert_eq!(store.create_anonymous_registration(anonymous(later).0, limit()).await, Ok(Ok(())));
    }
}

both_backends! {
    /// The purge never deletes the newest event, even past retention, so an
    /// event id is never given twice: a trail quiet for the whole retention
    /// keeps its last event, and the next event's id is above it. (SQLite's
    /// ids are rowids, the greatest plus one: purged down to nothing, the
    /// next event would be 1 again, below the deferred indexes' marks and
    /// every cursor handed out.)
    async fn the_purge_keeps_the_newest_event_and_ids_keep_rising(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let t0 = Timestamp::from_secs(1_800_000_000);
        let event = |i: u64| numbered_event(t0, i);
        store.record_events((0..3).map(event).collect()).await.unwrap_or_else(|e| panic!("{e}"));
        let all = EventFilter { limit: 100, ..Default::default() };
        let before = store.list_events(&all).await.unwrap_or_default();
        let newest = before.iter().map(|e| e.id).max().unwrap_or_default();
        let purged = store.purge_audit(t0.plus(Duration::from_secs(3600)), 100).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(purged, 2, "all but the newest");
        let left = store.list_events(&all).await.unwrap_or_default();
        assert_eq!(left.iter().map(|e| e.id).collect::<Vec<_>>(), [newest]);
        assert_eq!(store.purge_audit(t0.plus(Duration::from_secs(3600)), 100).await, Ok(0));
        store.record_event(event(3)).await.unwrap_or_else(|e| panic!("{e}"));
        let after = store.list_events(&all).await.unwrap_or_default();
        let ids: Vec<i64> = after.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids.iter().all(|&id| id >= newest), "{ids:?} after {newest}");
        assert!(ids.iter().any(|&id| id > newest), "a new id above every id given: {ids:?} after {newest}");
    }
}

both_backends! {
    /// The audit trail is purged by age, at most `limit` events a call
    /// (the sweep calls again while a batch comes back full).
    async fn audit_events_are_purged_in_batches(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let t0 = Timestamp::from_secs(1_800_000_000);
        let events: Vec<AuditEvent> = (0..12u64).map(|i| numbered_event(t0, i)).collect();
        store.record_events(events).await.unwrap_or_else(|e| panic!("{e}"));
        let cutoff = t0.plus(Duration::from_secs(10));
        let mut batches = Vec::new();
        loop {
            let n = store.purge_audit(cutoff, 4).await.unwrap_or_else(|e| panic!("{e}"));
            batches.push(n);
            if n < 4 {
                break;
            }
        }
        assert_eq!(batches, [4, 4, 2]);
        assert_eq!(batches.iter().sum::<u64>(), 10);
        let left = store.list_events(&EventFilter { limit: 100, ..Default::default() }).await.unwrap_or_default();
        assert_eq!(left.iter().map(|e| e.data["n"].as_u64().unwrap_or(99)).collect::<Vec<_>>(), [10, 11]);
    }
}
