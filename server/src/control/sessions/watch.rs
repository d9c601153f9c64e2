//! WatchSession: one watcher's copy of a session's events.

use super::convert::event_to_proto;
use crate::control::validate;
use crate::session::{Event, EventKind, SessionState, Snapshot};
use huashen_protos::v1;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

/// Forwards a session's events to one watcher until the session closes or
/// the watcher leaves. A slow watcher gets a `lagged` event, never blocks
/// the session.
pub(super) async fn forward_events(
    snap: Snapshot,
    mut rx: broadcast::Receiver<Event>,
    tx: mpsc::Sender<Result<v1::SessionEvent, Status>>,
) {
    let first = Event {
        seq: snap.last_seq,
        at: crate::store::now_ms(),
        kind: EventKind::StateChanged {
            previous: snap.state,
            current: snap.state,
        },
    };
    if tx.send(Ok(event_to_proto(&first))).await.is_err() {
        return;
    }
    if snap.state == SessionState::Closed {
        if let Some(reason) = snap.close_reason {
            let closed = Event {
                seq: snap.last_seq,
                at: first.at,
                kind: EventKind::Closed { reason },
            };
            let _ = tx.send(Ok(event_to_proto(&closed))).await;
        }
        return;
    }
    loop {
        let msg = match rx.recv().await {
            Ok(ev) if ev.seq <= snap.last_seq => continue,
            Ok(ev) => event_to_proto(&ev),
            Err(broadcast::error::RecvError::Lagged(missed)) => v1::SessionEvent {
                seq: 0,
                time: Some(validate::timestamp(crate::store::now_ms())),
                event: Some(v1::session_event::Event::Lagged(v1::Lagged { missed })),
            },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let last = matches!(msg.event, Some(v1::session_event::Event::Closed(_)));
        tokio::select! {
            sent = tx.send(Ok(msg)) => if sent.is_err() { return },
            // The watcher stopped reading; do not wait on it forever.
            _ = tx.closed() => return,
        }
        if last {
            return;
        }
    }
}
