//! Background processing: a bounded queue of uploads feeding a fixed number of workers that
//! run the pipeline, standing in for what S3 -> EventBridge -> Step Functions does in the
//! cloud. A full queue is reported to the producer at once (the upload answers 503) rather
//! than growing without bound; on shutdown everything queued is still run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use local::{ExecutionStatus, LocalPipeline};
use pipeline::io::Upload;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinSet;

/// The producers' side: cheap to clone.
#[derive(Clone)]
pub struct Queue {
    tx: mpsc::Sender<Upload>,
    running: Arc<AtomicUsize>,
}

/// A reserved place in the queue: holding it guarantees the upload can be queued once it is
/// stored, so nothing is stored that cannot be processed.
pub struct Slot(mpsc::OwnedPermit<Upload>);

impl Slot {
    pub fn send(self, upload: Upload) {
        self.0.send(upload);
    }
}

/// The workers, to be drained on shutdown.
pub struct Workers {
    closing: watch::Sender<bool>,
    set: JoinSet<()>,
}

impl Queue {
    /// A queue of `capacity` uploads and `workers` tasks running them on `pipeline`.
    pub fn start(
        pipeline: Arc<LocalPipeline>,
        capacity: usize,
        workers: usize,
    ) -> (Queue, Workers) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let (closing, closing_rx) = watch::channel(false);
        let running = Arc::new(AtomicUsize::new(0));
        let mut set = JoinSet::new();
        for _ in 0..workers.max(1) {
            set.spawn(work(
                pipeline.clone(),
                rx.clone(),
                closing_rx.clone(),
                running.clone(),
            ));
        }
        (Queue { tx, running }, Workers { closing, set })
    }

    /// A place in the queue, or `None` when it is full (or shutting down).
    pub fn try_reserve(&self) -> Option<Slot> {
        self.tx.clone().try_reserve_owned().ok().map(Slot)
    }

    /// Waits for a place in the queue (startup recovery, which has no client to answer).
    pub async fn reserve(&self) -> Option<Slot> {
        self.tx.clone().reserve_owned().await.ok().map(Slot)
    }

    /// Uploads waiting and being processed.
    pub fn pending(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity() + self.running.load(Ordering::Relaxed)
    }
}

impl Workers {
    /// Lets the workers finish everything queued, then stop. Call once nothing can enqueue
    /// any more (the server and the inbox have stopped).
    pub async fn drain(mut self) {
        let _ = self.closing.send(true);
        while self.set.join_next().await.is_some() {}
    }
}

async fn work(
    pipeline: Arc<LocalPipeline>,
    rx: Arc<Mutex<mpsc::Receiver<Upload>>>,
    mut closing: watch::Receiver<bool>,
    running: Arc<AtomicUsize>,
) {
    loop {
        let next = {
            // One worker waits on the queue at a time; the others wait for the lock.
            let mut rx = rx.lock().await;
            tokio::select! {
                biased;
                upload = rx.recv() => upload,
                // Once closing, whatever is queued still runs; an empty queue ends the worker.
                _ = closing.wait_for(|c| *c) => rx.try_recv().ok(),
            }
        };
        let Some(upload) = next else { break };
        running.fetch_add(1, Ordering::Relaxed);
        run_one(&pipeline, &upload).await;
        running.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn run_one(pipeline: &LocalPipeline, upload: &Upload) {
    match pipeline.run(upload).await {
        Ok(outcome) => {
            let Some(record) = &outcome.record else {
                // Failures are recorded; an image without a record was deleted before or
                // while it was processed, and its execution removed what it wrote.
                let id = pipeline::keys::identify(&upload.key, upload.etag.as_deref())
                    .map(|i| i.id)
                    .unwrap_or_default();
                tracing::info!(key = %upload.key, image_id = %id, status = "deleted", "processing ended: the image was deleted");
                return;
            };
            let (status, id) = (record.status.as_str(), record.id.as_str());
            match &outcome.execution.status {
                ExecutionStatus::Failed { error, cause } => tracing::warn!(
                    key = %upload.key, image_id = %id, %status, %error, %cause, "processing ended in failure"
                ),
                _ => tracing::info!(key = %upload.key, image_id = %id, %status, "processed"),
            }
        }
        Err(e) => tracing::error!(key = %upload.key, error = %e, "cannot run the pipeline"),
    }
}
