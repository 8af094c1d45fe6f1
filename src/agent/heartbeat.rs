//! The reference agent's heartbeat: `POST <server>/api/v1/agents/<name>/heartbeat` with the
//! calls in flight, at once and then every interval (10 s, a third of the server's TTL, so one
//! lost beat does not make the agent dead). A failed beat is logged and tried at the next tick.

use super::server::Agent;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where and how often to beat.
pub struct Heartbeat {
    /// The server's base URL.
    pub url: String,
    /// The agent's name.
    pub name: String,
    /// An agent key bound to the name.
    pub key: String,
    /// The interval.
    pub every: Duration,
}

impl Heartbeat {
    /// Beat until `stop`.
    pub async fn run(self, agent: Arc<Agent>, stop: CancellationToken) {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        let endpoint = format!("{}/api/v1/agents/{}/heartbeat", self.url, self.name);
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let body = serde_json::json!({ "in_flight": agent.in_flight() });
            let sent = http
                .post(&endpoint)
                .header("X-API-Key", &self.key)
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    tracing::debug!(agent = %self.name, "heartbeat sent")
                }
                Ok(response) => {
                    let status = response.status();
                    let detail = response.text().await.unwrap_or_default();
                    tracing::warn!(agent = %self.name, %status, detail, "heartbeat refused")
                }
                Err(e) => tracing::warn!(agent = %self.name, error = %e, "heartbeat failed"),
            }
        }
    }
}
