//! Listings against a naive model: random jobs (statuses reached through
//! updates, tags added and changed, modification times with ties) and
//! random queries; every plan must return what filtering and sorting the
//! whole set returns, totals and counts included (so the counters the
//! triggers keep, per status, tag and hour, are checked too), and cursors
//! must walk the same list.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{TimeZone, Utc};
use kgym_core::JobStatus;
use proptest::prelude::*;
use rusqlite::{Connection, params};

use super::{counts, list_planned};
use crate::store::tags::jobs_with_tag;
use crate::types::{ListQuery, Order, TagQuery, TimeField};

const STATUSES: [JobStatus; 5] =
    [JobStatus::Pending, JobStatus::Waiting, JobStatus::InProgress, JobStatus::Finished, JobStatus::Aborted];
const KEYS: [&str; 3] = ["a", "b", "c"];
const VALUES: [&str; 2] = ["x", "y"];

#[derive(Debug, Clone)]
struct ModelJob {
    id: i64,
    created: i64,
    modified: i64,
    status: JobStatus,
    tags: BTreeMap<String, String>,
}

/// A generated job: status, modified offset, tags, a tag changed later.
type GenJob = (usize, i64, Vec<(usize, usize)>, Option<(usize, usize)>);

fn job() -> impl Strategy<Value = GenJob> {
    // status, modified offset (few values: ties), tags, a tag changed later
    (
        0..5usize,
        0..6i64,
        proptest::collection::vec((0..3usize, 0..2usize), 0..3),
        proptest::option::of((0..3usize, 0..2usize)),
    )
}

fn query() -> impl Strategy<Value = ListQuery> {
    (
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(0..5usize),
        proptest::option::of((0..3usize, proptest::option::of(0..2usize))),
        proptest::option::of((0..8i64, 0..8i64, 0..3u8)),
        0..40u64,
        1..8u32,
    )
        .prop_map(|(modified, newest, status, tag, window, start, limit)| ListQuery {
            by: if modified { TimeField::Modified } else { TimeField::Created },
            order: if newest { Order::NewestFirst } else { Order::OldestFirst },
            status: status.map(|s| STATUSES[s]),
            tag: tag.map(|(k, _)| KEYS[k].to_owned()),
            tag_value: tag.and_then(|(_, v)| v.map(|v| VALUES[v].to_owned())),
            // Both ends, or one of them open.
            from: window.filter(|w| w.2 != 1).map(|(a, _, _)| Utc.timestamp_micros(base(a)).unwrap()),
            to: window.filter(|w| w.2 != 2).map(|(a, b, _)| Utc.timestamp_micros(base(a + b)).unwrap()),
            start,
            limit,
            after: None,
        })
}

/// Times half an hour apart from the start of an hour: every other one
/// starts an hour, so windows cover whole hours (read from the hour
/// counters) and end on, just before and inside hours (read from rows).
fn base(offset: i64) -> i64 {
    const HOUR_START: i64 = 1_699_999_200_000_000;
    HOUR_START + offset * 1_800_000_000
}

fn fill(conn: &mut Connection, jobs: &[GenJob]) -> Vec<ModelJob> {
    let tx = conn.transaction().unwrap();
    let mut model = Vec::new();
    for (i, (status, modified, tags, changed)) in jobs.iter().enumerate() {
        let created = base(i as i64);
        tx.execute(
            "INSERT INTO jobs (created_us, modified_us, status, cursor, stages)
             VALUES (?1, ?1, 'pending', 0, '[{\"kind\": \"k\", \"arg\": {\"big\": \"...\"}}]')",
            [created],
        )
        .unwrap();
        let id = tx.last_insert_rowid();
        let mut tag_map = BTreeMap::new();
        for (k, v) in tags {
            tx.execute(
                "INSERT INTO tags (job_id, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (job_id, key) DO UPDATE SET value = excluded.value",
                params![id, KEYS[*k], VALUES[*v]],
            )
            .unwrap();
            tag_map.insert(KEYS[*k].to_owned(), VALUES[*v].to_owned());
        }
        let status = STATUSES[*status];
        // Through an update, as the scheduler moves jobs (and the
        // counters follow).
        tx.execute(
            "UPDATE jobs SET status = ?1, modified_us = ?2 WHERE id = ?3",
            params![status.as_str(), base(*modified), id],
        )
        .unwrap();
        if let Some((k, v)) = changed {
            tx.execute(
                "INSERT INTO tags (job_id, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (job_id, key) DO UPDATE SET value = excluded.value",
                params![id, KEYS[*k], VALUES[*v]],
            )
            .unwrap();
            tag_map.insert(KEYS[*k].to_owned(), VALUES[*v].to_owned());
        }
        model.push(ModelJob { id, created, modified: base(*modified), status, tags: tag_map });
    }
    tx.commit().unwrap();
    model
}

/// What the listing must return, before paging.
fn expected(model: &[ModelJob], q: &ListQuery, with_status: bool) -> Vec<i64> {
    let time = |j: &ModelJob| if q.by == TimeField::Modified { j.modified } else { j.created };
    let mut out: Vec<&ModelJob> = model
        .iter()
        .filter(|j| !with_status || q.status.is_none_or(|s| j.status == s))
        .filter(|j| match (&q.tag, &q.tag_value) {
            (Some(k), Some(v)) => j.tags.get(k) == Some(v),
            (Some(k), None) => j.tags.contains_key(k),
            _ => true,
        })
        .filter(|j| q.from.is_none_or(|f| time(j) >= f.timestamp_micros()))
        .filter(|j| q.to.is_none_or(|t| time(j) <= t.timestamp_micros()))
        .collect();
    out.sort_by_key(|j| if q.by == TimeField::Modified { (j.modified, j.id) } else { (j.id, 0) });
    if q.order == Order::NewestFirst {
        out.reverse();
    }
    out.into_iter().map(|j| j.id).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_plan_lists_what_the_model_lists(
        jobs in proptest::collection::vec(job(), 0..45),
        queries in proptest::collection::vec(query(), 1..6),
    ) {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrate(&mut conn).unwrap();
        let model = fill(&mut conn, &jobs);
        let live = BTreeSet::new();
        for q in &queries {
            let all = expected(&model, q, true);
            let page_ids: Vec<i64> = all.iter().skip(q.start as usize).take(q.limit as usize).copied().collect();
            for few in [0, u64::MAX] {
                let page = list_planned(&conn, q, &live, few).unwrap();
                let got: Vec<i64> = page.items.iter().map(|j| j.id.get() as i64).collect();
                prop_assert_eq!(&got, &page_ids, "page of {:?} (few {})", q, few);
                prop_assert_eq!(page.total, all.len() as u64, "total of {:?}", q);
                // Following cursors from the first page walks the whole list.
                let mut walk = ListQuery { start: 0, ..q.clone() };
                let mut walked = Vec::new();
                loop {
                    let p = list_planned(&conn, &walk, &live, few).unwrap();
                    walked.extend(p.items.iter().map(|j| j.id.get() as i64));
                    match (p.next, p.cursor) {
                        (Some(n), Some(c)) => (walk.start, walk.after) = (n, Some(c)),
                        _ => break,
                    }
                }
                prop_assert_eq!(&walked, &all, "cursor walk of {:?}", q);
            }
            // Counts per status of the same selection (status ignored).
            let c = counts(&conn, q).unwrap();
            let ids: BTreeSet<i64> = expected(&model, q, false).into_iter().collect();
            let n = |s: JobStatus| model.iter().filter(|j| ids.contains(&j.id) && j.status == s).count() as u64;
            prop_assert_eq!(
                (c.pending, c.waiting, c.in_progress, c.finished, c.aborted),
                (n(JobStatus::Pending), n(JobStatus::Waiting), n(JobStatus::InProgress), n(JobStatus::Finished), n(JobStatus::Aborted)),
                "counts of {:?}", q
            );
            // Tag lookups page and total like the model.
            if let Some(key) = &q.tag {
                let tq = TagQuery { start: q.start, limit: q.limit, order: q.order, ..TagQuery::new(key, q.tag_value.clone()) };
                let page = jobs_with_tag(&conn, &tq).unwrap();
                let mut tagged: Vec<i64> = model
                    .iter()
                    .filter(|j| match &q.tag_value {
                        Some(v) => j.tags.get(key) == Some(v),
                        None => j.tags.contains_key(key),
                    })
                    .map(|j| j.id)
                    .collect();
                if q.order == Order::NewestFirst {
                    tagged.reverse();
                }
                let want: Vec<i64> = tagged.iter().skip(q.start as usize).take(q.limit as usize).copied().collect();
                let got: Vec<i64> = page.items.iter().map(|m| m.job.get() as i64).collect();
                prop_assert_eq!(got, want, "tag page of {:?}", tq);
                prop_assert_eq!(page.total, tagged.len() as u64);
            }
        }
    }
}
