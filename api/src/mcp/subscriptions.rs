//! Resource subscriptions: a client that subscribes to `hypercode://missions/{id}` is sent
//! `notifications/resources/updated` each time the mission's status changes; one subscribed to
//! its `/history` each time an event is recorded.
//!
//! Each subscription is a task that follows the mission's event feed (`GET
//! /api/v1/events?mission=ID`, through the same [`Backend`] as the tools, so as the same key),
//! reopening it after the last position seen when it drops. Events up to the mission's last
//! one at subscription time are skipped; after those, an event of a subscribed mission makes
//! the task read the mission again and compare its status. A task ends when the client
//! unsubscribes, when its session ends (the [`Subscriptions`] of a session cancel their tasks
//! when dropped) or when the process stops.

use super::backend::{mission_path, ApiRequest, Backend, CallError};
use super::resources::MissionResource;
use super::sse::SseParser;
use crate::keys::Principal;
use futures::StreamExt as _;
use hypercode_engine::MissionId;
use rmcp::model::ResourceUpdatedNotificationParam;
use rmcp::service::Peer;
use rmcp::RoleServer;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The first wait before reopening a feed that could not be opened; it doubles up to
/// [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(10);

/// The feed sends a keep-alive every 15 s; silence for this long means the connection is dead
/// and the feed is reopened.
const SILENCE: Duration = Duration::from_secs(45);

/// History events read per request when finding a mission's last event.
const PAGE: u32 = 10_000;

/// One session's subscriptions, by URI; dropping it ends their tasks.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions(Mutex<HashMap<String, DropGuard>>);

impl Subscriptions {
    /// Keep `task`'s token under `uri`, ending the subscription it replaces.
    pub(crate) fn insert(&self, uri: String, task: CancellationToken) {
        if let Ok(mut active) = self.0.lock() {
            active.insert(uri, task.drop_guard());
        }
    }

    /// End the subscription to `uri`, if any.
    pub(crate) fn remove(&self, uri: &str) {
        if let Ok(mut active) = self.0.lock() {
            active.remove(uri);
        }
    }
}

/// A subscription being served.
pub(crate) struct Watch {
    /// Where the feed and the mission are read.
    pub(crate) backend: Arc<dyn Backend>,
    /// The key that subscribed.
    pub(crate) caller: Option<Principal>,
    /// The client to notify.
    pub(crate) peer: Peer<RoleServer>,
    /// What was subscribed to.
    pub(crate) resource: MissionResource,
    /// Its URI, as the client wrote it.
    pub(crate) uri: String,
    /// The mission.
    pub(crate) mission: MissionId,
}

/// Where a mission stands: its last event's `seq` and its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Standing {
    last_seq: i64,
    status: Value,
}

impl Watch {
    /// Where the mission stands now (an error if the caller may not read it, or it does not
    /// exist). The history is read before the status: a change between the two reads is then
    /// seen again by the task, rather than missed.
    pub(crate) async fn standing(&self) -> Result<Standing, CallError> {
        let id = self.resource.id();
        let mut last_seq = 0;
        loop {
            let page = self
                .read(
                    ApiRequest::get(mission_path(id, "/history"))
                        .param("after", Some(last_seq))
                        .param("limit", Some(PAGE)),
                )
                .await?;
            match page["next_after"].as_i64() {
                Some(next) if next > last_seq => last_seq = next,
                _ => break,
            }
        }
        let status = self.status().await?;
        Ok(Standing { last_seq, status })
    }

    async fn read(&self, request: ApiRequest) -> Result<Value, CallError> {
        self.backend.call(self.caller.clone(), request).await
    }

    async fn status(&self) -> Result<Value, CallError> {
        let mission = self
            .read(ApiRequest::get(mission_path(self.resource.id(), "")))
            .await?;
        Ok(mission["status"].clone())
    }

    /// Follow the feed until `stop` is cancelled, the client is gone or the API refuses the
    /// key (revoked, or the mission deleted).
    pub(crate) async fn run(self, mut standing: Standing, stop: CancellationToken) {
        let mut position: Option<i64> = None;
        let mut retry = FIRST_RETRY;
        loop {
            let opened = tokio::select! {
                () = stop.cancelled() => return,
                opened = self.backend.events(self.caller.clone(), self.mission, position) => opened,
            };
            match opened {
                Ok(mut stream) => {
                    retry = FIRST_RETRY;
                    let mut parser = SseParser::default();
                    loop {
                        let chunk = tokio::select! {
                            () = stop.cancelled() => return,
                            chunk = tokio::time::timeout(SILENCE, stream.next()) => chunk,
                        };
                        // An error, the end of the stream, or silence: reopen it.
                        let Ok(Some(Ok(chunk))) = chunk else { break };
                        for message in parser.push(&chunk) {
                            if let Some(id) = message.id.as_deref().and_then(|i| i.parse().ok()) {
                                position = Some(id);
                            }
                            let event: Value = message
                                .data
                                .as_deref()
                                .and_then(|d| serde_json::from_str(d).ok())
                                .unwrap_or_default();
                            if !self.on_event(&event, &mut standing).await {
                                return;
                            }
                        }
                    }
                    tracing::debug!(uri = %self.uri, "subscription feed dropped; reopening");
                }
                Err(CallError::Refused { status, problem }) => {
                    tracing::info!(uri = %self.uri, status, detail = %problem["detail"], "subscription ended: the feed was refused");
                    return;
                }
                Err(CallError::Unreachable(why)) => {
                    tracing::warn!(uri = %self.uri, error = %why, "subscription feed unavailable; retrying");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(MAX_RETRY);
        }
    }

    /// Notify the client if `event` changed what it subscribed to; `false` once the client
    /// is gone.
    async fn on_event(&self, event: &Value, standing: &mut Standing) -> bool {
        let Some(seq) = event["seq"].as_i64().filter(|s| *s > standing.last_seq) else {
            return true;
        };
        standing.last_seq = seq;
        let changed = match self.resource {
            MissionResource::History(_) => true,
            MissionResource::Mission(_) => match self.status().await {
                Ok(status) if status != standing.status => {
                    standing.status = status;
                    true
                }
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(uri = %self.uri, error = %e, "cannot read the subscribed mission");
                    false
                }
            },
        };
        if !changed {
            return true;
        }
        self.peer
            .notify_resource_updated(ResourceUpdatedNotificationParam::new(self.uri.clone()))
            .await
            .is_ok()
    }
}
