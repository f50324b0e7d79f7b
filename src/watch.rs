//! The watches: how they list and retry, and how the watches of several namespaces become
//! one stream with the meaning of a single watch.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use kube::runtime::watcher::{self, Event, ExponentialBackoff};

use crate::crd::BasetenSecret;

/// How both watches list: the most recent state, in pages, so a first list of many objects
/// never sits in memory whole (docs/benchmarks.md).
pub fn watch_config() -> watcher::Config {
    watcher::Config::default().page_size(WATCH_PAGE_SIZE)
}

/// Longest first wait before a failed watch tries again; it doubles up to [`WATCH_RETRY_MAX`].
const WATCH_RETRY_MIN: Duration = Duration::from_millis(250);

/// Longest wait between tries of a failed watch: short, so changes are seen soon after a
/// kube-apiserver restart; a relist every 5 s at worst costs the apiserver little.
const WATCH_RETRY_MAX: Duration = Duration::from_secs(5);

/// Retry delays of a failed watch: exponential with jitter, the first at most
/// [`WATCH_RETRY_MIN`], doubling to at most [`WATCH_RETRY_MAX`]; kube's stream backoff resets
/// it on the next event.
pub fn watch_backoff() -> ExponentialBackoff {
    // backon's jitter adds up to the delay again (d becomes a wait in [d, 2d)), so half the
    // bounds give waits in [min/2, min] at first and [max/2, max] at the ceiling.
    backon::ExponentialBuilder::default()
        .with_min_delay(WATCH_RETRY_MIN / 2)
        .with_max_delay(WATCH_RETRY_MAX / 2)
        .with_factor(2.0)
        .with_jitter()
        // backon gives up after three tries unless told otherwise; a watch never gives up.
        .without_max_times()
        .into()
}

/// Objects per page of a watch's initial list.
const WATCH_PAGE_SIZE: u32 = 500;

/// One watch stream of resources.
pub type Events = BoxStream<'static, watcher::Result<Event<BasetenSecret>>>;

/// Joins the resource watches of several namespaces into one stream that a single reflector
/// store can follow as if it were one watch: one `Init`, the first lists of every namespace
/// as `InitApply`, one `InitDone` once all are listed (so the store, the claims and the
/// controller start with the whole picture), then live events. A namespace that lists again
/// after an error sends its objects as `Apply`, and once it is listed a `Delete` for each
/// object of that namespace the store still holds but the new list lacks.
pub fn merge_namespaces(watches: Vec<(String, Events)>, store: Store<BasetenSecret>) -> Events {
    if watches.len() == 1 {
        return watches
            .into_iter()
            .next()
            .map(|(_, events)| events)
            .unwrap();
    }
    let count = watches.len();
    let merge = Merge {
        namespaces: watches.iter().map(|(ns, _)| ns.clone()).collect(),
        store,
        listed: vec![false; count],
        all_listed: false,
        seen: vec![None; count],
        held: Vec::new(),
        out: VecDeque::from([Ok(Event::Init)]),
        sweep: Vec::new(),
    };
    let inner = stream::select_all(
        watches
            .into_iter()
            .enumerate()
            .map(|(i, (_, events))| events.map(move |event| (i, event))),
    );
    stream::unfold((merge, inner), |(mut merge, mut inner)| async move {
        loop {
            // Sweeps run once everything before them went downstream, so the store holds
            // what the relist brought.
            if merge.out.is_empty() {
                merge.run_sweeps();
            }
            if let Some(item) = merge.out.pop_front() {
                return Some((item, (merge, inner)));
            }
            let (i, event) = inner.next().await?;
            merge.on(i, event);
        }
    })
    .boxed()
}

/// The state of [`merge_namespaces`].
struct Merge {
    /// The namespace of each watch.
    namespaces: Vec<String>,
    /// The store the merged stream feeds, read to find what a relist no longer has.
    store: Store<BasetenSecret>,
    /// Which watches finished their first list.
    listed: Vec<bool>,
    /// Whether all did (and the one `InitDone` went out).
    all_listed: bool,
    /// Names each watch has shown alive since its latest list began, until it is swept.
    seen: Vec<Option<HashSet<String>>>,
    /// Live events of watches already listed, held until every namespace is listed.
    held: Vec<(usize, Event<BasetenSecret>)>,
    /// Events ready to go downstream.
    out: VecDeque<watcher::Result<Event<BasetenSecret>>>,
    /// Watches whose relist is complete, to sweep once `out` is drained.
    sweep: Vec<usize>,
}

impl Merge {
    fn on(&mut self, i: usize, event: watcher::Result<Event<BasetenSecret>>) {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                self.out.push_back(Err(error));
                return;
            }
        };
        match event {
            Event::Init => {
                self.seen[i] = Some(HashSet::new());
                // Live events from before this relist are older than what it brings.
                self.held.retain(|(j, _)| *j != i);
            }
            Event::InitApply(object) => {
                self.note(i, &object, true);
                self.out.push_back(Ok(if self.all_listed {
                    Event::Apply(object)
                } else {
                    Event::InitApply(object)
                }));
            }
            Event::InitDone if self.all_listed => self.sweep.push(i),
            Event::InitDone => {
                self.listed[i] = true;
                if self.listed.iter().all(|l| *l) {
                    self.all_listed = true;
                    self.out.push_back(Ok(Event::InitDone));
                    self.out
                        .extend(self.held.drain(..).map(|(_, event)| Ok(event)));
                    self.sweep.extend(0..self.namespaces.len());
                }
            }
            live => {
                let alive = matches!(live, Event::Apply(_));
                if let Event::Apply(object) | Event::Delete(object) = &live {
                    self.note(i, object, alive);
                }
                if self.all_listed {
                    self.out.push_back(Ok(live));
                } else {
                    self.held.push((i, live));
                }
            }
        }
    }

    /// Records that `object` of watch `i` is alive (or gone) while that watch is listing.
    fn note(&mut self, i: usize, object: &BasetenSecret, alive: bool) {
        if let Some(seen) = self.seen[i].as_mut() {
            if alive {
                seen.insert(object.name_any());
            } else {
                seen.remove(&object.name_any());
            }
        }
    }

    /// Deletes, for each watch due, what the store holds in its namespace but its latest
    /// list did not bring.
    fn run_sweeps(&mut self) {
        for i in std::mem::take(&mut self.sweep) {
            let Some(seen) = self.seen[i].take() else {
                continue;
            };
            let namespace = &self.namespaces[i];
            for object in self.store.state() {
                if object.namespace().as_deref() == Some(namespace.as_str())
                    && !seen.contains(&object.name_any())
                {
                    self.out
                        .push_back(Ok(Event::Delete(object.as_ref().clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use kube::runtime::reflector;

    fn object(namespace: &str, name: &str) -> BasetenSecret {
        let mut object: BasetenSecret = serde_json::from_value(serde_json::json!({
            "apiVersion": "baseten.co/v1alpha1",
            "kind": "BasetenSecret",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"secretRef": {"name": "s", "key": "k"}},
        }))
        .unwrap();
        object.metadata.uid = Some(format!("{namespace}/{name}"));
        object
    }

    type Sender = mpsc::UnboundedSender<watcher::Result<Event<BasetenSecret>>>;

    /// What the merged stream sends until it would wait, each applied to the store.
    async fn drain(
        merged: &mut Events,
        writer: &mut reflector::store::Writer<BasetenSecret>,
    ) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(50), merged.next()).await
        {
            let event = event.unwrap();
            writer.apply_watcher_event(&event);
            seen.push(match &event {
                Event::Init => "Init".to_string(),
                Event::InitDone => "InitDone".to_string(),
                Event::InitApply(o) => format!("InitApply {}", o.name_any()),
                Event::Apply(o) => format!("Apply {}", o.name_any()),
                Event::Delete(o) => format!("Delete {}", o.name_any()),
            });
        }
        seen
    }

    fn send(to: &Sender, event: Event<BasetenSecret>) {
        to.unbounded_send(Ok(event)).unwrap();
    }

    fn names(store: &Store<BasetenSecret>) -> Vec<String> {
        let mut names: Vec<String> = store.state().iter().map(|o| o.name_any()).collect();
        names.sort();
        names
    }

    #[test]
    fn watch_retries_double_to_the_ceiling_and_start_over_after_an_event() {
        use kube::runtime::utils::Backoff;
        let mut backoff = watch_backoff();
        let ceilings = [250, 500, 1000, 2000, 4000, 5000, 5000, 5000].map(Duration::from_millis);
        for _ in 0..2 {
            for ceiling in ceilings {
                let wait = backoff.next().unwrap();
                assert!(
                    wait >= ceiling / 2 && wait <= ceiling,
                    "{wait:?} is not within {:?}..={ceiling:?}",
                    ceiling / 2
                );
            }
            backoff.reset();
        }
    }

    #[tokio::test]
    async fn several_namespaces_read_as_one_watch_and_relists_delete_what_went() {
        let (reader, mut writer) = reflector::store::<BasetenSecret>();
        let (a, a_events) = mpsc::unbounded();
        let (b, b_events) = mpsc::unbounded();
        let mut merged = merge_namespaces(
            vec![
                ("a".into(), a_events.boxed()),
                ("b".into(), b_events.boxed()),
            ],
            reader.clone(),
        );

        // a is listed and changes live while b still lists: nothing is final yet.
        send(&a, Event::Init);
        send(&a, Event::InitApply(object("a", "a1")));
        send(&a, Event::InitApply(object("a", "a2")));
        send(&a, Event::InitDone);
        send(&a, Event::Apply(object("a", "a3")));
        assert_eq!(
            drain(&mut merged, &mut writer).await,
            ["Init", "InitApply a1", "InitApply a2"],
            "one Init, first lists buffered, live events held"
        );
        send(&b, Event::Init);
        send(&b, Event::InitApply(object("b", "b1")));
        assert_eq!(drain(&mut merged, &mut writer).await, ["InitApply b1"]);
        assert!(
            names(&reader).is_empty(),
            "the store waits for every namespace"
        );

        // b is listed: one InitDone, then the held live event.
        send(&b, Event::InitDone);
        assert_eq!(
            drain(&mut merged, &mut writer).await,
            ["InitDone", "Apply a3"]
        );
        assert_eq!(names(&reader), ["a1", "a2", "a3", "b1"]);

        // a lists again after an error: a2 went while the watch was down.
        send(&a, Event::Init);
        send(&a, Event::InitApply(object("a", "a1")));
        send(&a, Event::InitApply(object("a", "a3")));
        send(&a, Event::InitDone);
        assert_eq!(
            drain(&mut merged, &mut writer).await,
            ["Apply a1", "Apply a3", "Delete a2"]
        );
        assert_eq!(names(&reader), ["a1", "a3", "b1"], "b is untouched");

        // Live deletions pass through.
        send(&b, Event::Delete(object("b", "b1")));
        assert_eq!(drain(&mut merged, &mut writer).await, ["Delete b1"]);
        assert_eq!(names(&reader), ["a1", "a3"]);
    }

    #[tokio::test]
    async fn a_relist_before_every_namespace_is_listed_forgets_what_it_no_longer_has() {
        let (reader, mut writer) = reflector::store::<BasetenSecret>();
        let (a, a_events) = mpsc::unbounded();
        let (b, b_events) = mpsc::unbounded();
        let mut merged = merge_namespaces(
            vec![
                ("a".into(), a_events.boxed()),
                ("b".into(), b_events.boxed()),
            ],
            reader.clone(),
        );
        send(&a, Event::Init);
        send(&a, Event::InitApply(object("a", "gone")));
        send(&a, Event::InitApply(object("a", "kept")));
        send(&a, Event::InitDone);
        send(&a, Event::Delete(object("a", "kept")));
        // a's watch fails and lists again: "kept" was created again, "gone" went. The
        // held deletion is older than that list.
        send(&a, Event::Init);
        send(&a, Event::InitApply(object("a", "kept")));
        send(&a, Event::InitDone);
        assert_eq!(
            drain(&mut merged, &mut writer).await,
            ["Init", "InitApply gone", "InitApply kept", "InitApply kept"]
        );
        send(&b, Event::Init);
        send(&b, Event::InitDone);
        assert_eq!(
            drain(&mut merged, &mut writer).await,
            ["InitDone", "Delete gone"],
            "the deletion held from before the relist is dropped; the sweep removes what went"
        );
        assert_eq!(names(&reader), ["kept"]);
    }

    #[tokio::test]
    async fn one_namespace_is_passed_through_unchanged() {
        let (reader, mut writer) = reflector::store::<BasetenSecret>();
        let (a, a_events) = mpsc::unbounded();
        let mut merged = merge_namespaces(vec![("a".into(), a_events.boxed())], reader.clone());
        send(&a, Event::Init);
        send(&a, Event::InitApply(object("a", "a1")));
        send(&a, Event::InitDone);
        send(&a, Event::Init);
        assert_eq!(
            drain(&mut merged, &mut writer).await,
            ["Init", "InitApply a1", "InitDone", "Init"]
        );
    }
}
