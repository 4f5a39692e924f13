//! Group commit: the instances that are ready at the same moment share one fsync per series
//! folder and one SQLite transaction. One association waits for each answer, so alone it gains
//! nothing; with several, each instance pays a share of both syncs instead of both.
//!
//! No task runs it: the first caller to take the leader's lock commits everything queued by then
//! (its own instance and those of other associations), the others find theirs answered.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tokio::sync::oneshot;

use super::{Refusal, RefusalCause};
use crate::index::{Index, InstanceRecord};
use crate::logging::chain;
use crate::store::Store;

/// An indexed instance.
#[derive(Debug)]
pub struct Indexed {
    /// The path of the copy it replaced, if any (a re-sent instance).
    pub previous: Option<String>,
    /// How many instances, this one included, the commit made durable.
    pub committed_with: usize,
}

pub type Committed = Result<Indexed, Refusal>;

struct Pending {
    record: InstanceRecord,
    reply: oneshot::Sender<Committed>,
}

#[derive(Default)]
pub struct GroupCommit {
    queue: std::sync::Mutex<Vec<Pending>>,
    leader: tokio::sync::Mutex<()>,
}

impl GroupCommit {
    /// Make the folder entry of a placed instance durable and index it, with whatever else is
    /// ready. Only an `Ok` may be answered with Success.
    pub async fn commit(&self, store: &Store, index: &Index, record: InstanceRecord) -> Committed {
        let (reply, answer) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Pending { record, reply });
        {
            let _leader = self.leader.lock().await;
            let batch = std::mem::take(
                &mut *self
                    .queue
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
            if !batch.is_empty() {
                commit_batch(store, index, batch).await;
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(Refusal::new(
                RefusalCause::Internal,
                "the commit of this instance was interrupted",
            ))
        })
    }
}

async fn commit_batch(store: &Store, index: &Index, batch: Vec<Pending>) {
    let unsynced = sync_folders(store, &batch).await;
    let mut ready = Vec::with_capacity(batch.len());
    for pending in batch {
        match unsynced.get(folder_of(&pending.record)) {
            Some(why) => {
                let _ = pending.reply.send(Err(Refusal::new(
                    RefusalCause::WriteFailed,
                    format!("cannot make the instance's folder entry durable: {why}"),
                )));
            }
            None => ready.push(pending),
        }
    }
    if ready.len() > 1 {
        let records: Vec<&InstanceRecord> = ready.iter().map(|p| &p.record).collect();
        match index.record_instances(&records).await {
            Ok(previous) => {
                let committed_with = ready.len();
                for (pending, previous) in ready.into_iter().zip(previous) {
                    let _ = pending.reply.send(Ok(Indexed {
                        previous,
                        committed_with,
                    }));
                }
                return;
            }
            // One row or the commit failed: each alone, so that only what fails is refused.
            Err(e) => {
                tracing::debug!(error = %chain(&e), instances = ready.len(), "a group commit failed; indexing its instances one by one");
            }
        }
    }
    for pending in ready {
        let indexed = index.record_instance(&pending.record).await;
        let indexed = indexed
            .map(|previous| Indexed {
                previous,
                committed_with: 1,
            })
            .map_err(|e| {
                Refusal::new(
                    RefusalCause::IndexFailed,
                    format!("cannot index the instance: {}", chain(&e)),
                )
            });
        let _ = pending.reply.send(indexed);
    }
}

fn folder_of(record: &InstanceRecord) -> &Path {
    Path::new(&record.file_path)
        .parent()
        .unwrap_or(Path::new(""))
}

/// Fsync each folder the batch placed files in, once; the folders that failed, with why.
async fn sync_folders(store: &Store, batch: &[Pending]) -> BTreeMap<PathBuf, String> {
    let folders: BTreeSet<PathBuf> = batch
        .iter()
        .map(|p| folder_of(&p.record).to_owned())
        .collect();
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        folders
            .into_iter()
            .filter_map(|folder| {
                store
                    .sync_folder(&folder)
                    .err()
                    .map(|e| (folder, chain(&e)))
            })
            .collect()
    })
    .await
    .unwrap_or_else(|e| {
        let why = format!("the sync task failed: {}", chain(&e));
        batch
            .iter()
            .map(|p| (folder_of(&p.record).to_owned(), why.clone()))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// An instance written to the store, and its record.
    fn placed(store: &Store, n: usize, association: Option<i64>) -> InstanceRecord {
        let sop = format!("1.2.3.4.{n}");
        let path = Store::instance_path("1.2", "1.2.3", &sop).unwrap();
        let part = store.incoming_path(&n.to_string());
        store.write_instance(&path, b"instance", &part).unwrap();
        InstanceRecord {
            patient_id: "P1".into(),
            study_instance_uid: "1.2".into(),
            series_instance_uid: "1.2.3".into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
            sop_instance_uid: sop,
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            file_path: path.to_string_lossy().into_owned(),
            file_size: 8,
            calling_ae: "PACS".into(),
            association,
            ..Default::default()
        }
    }

    /// Commit `records` at once: they queue while the leader's lock is held, as they do while a
    /// commit is syncing, then one caller commits them all.
    async fn commit_together(
        group: &Arc<GroupCommit>,
        store: &Store,
        index: &Index,
        records: Vec<InstanceRecord>,
    ) -> Vec<Committed> {
        let held = group.leader.lock().await;
        let count = records.len();
        let tasks: Vec<_> = records
            .into_iter()
            .map(|record| {
                let (group, store, index) = (group.clone(), store.clone(), index.clone());
                tokio::spawn(async move { group.commit(&store, &index, record).await })
            })
            .collect();
        while group.queue.lock().unwrap().len() < count {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        drop(held);
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        answers
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instances_ready_together_share_one_commit_and_a_bad_row_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let index = Index::open(&dir.path().join("index.sqlite")).await.unwrap();
        let group = Arc::new(GroupCommit::default());

        let records = (0..8).map(|n| placed(&store, n, None)).collect();
        for answer in commit_together(&group, &store, &index, records).await {
            assert_eq!(answer.unwrap().committed_with, 8);
        }
        assert_eq!(index.counts().await.unwrap().instances, 8);

        // A row the index refuses (its association does not exist) fails the shared commit; the
        // instances are then indexed one by one and only that one is refused.
        let mut records: Vec<_> = (8..11).map(|n| placed(&store, n, None)).collect();
        records.push(placed(&store, 11, Some(424_242)));
        let answers = commit_together(&group, &store, &index, records).await;
        for answer in &answers[..3] {
            assert_eq!(answer.as_ref().unwrap().committed_with, 1);
        }
        let refusal = answers[3].as_ref().unwrap_err();
        assert_eq!(refusal.cause, RefusalCause::IndexFailed, "{refusal:?}");
        assert_eq!(index.counts().await.unwrap().instances, 11);

        // A re-sent instance replaces its copy; the old path comes back when it moved.
        let mut again = placed(&store, 3, None);
        again.file_path = "dicom/1.2/1.2.3/elsewhere.dcm".into();
        let answer = group.commit(&store, &index, again).await.unwrap();
        assert_eq!(
            answer.previous.as_deref(),
            Some("dicom/1.2/1.2.3/1.2.3.4.3.dcm")
        );
    }
}
