//! `hypercode healthcheck`: exits 0 when this machine's server answers `/healthz` (or, with
//! `--ready`, `/readyz`) with 200, 1 otherwise. It is the container image's healthcheck, so the
//! runtime image needs no shell or HTTP client besides the binary.

use std::process::ExitCode;
use std::time::Duration;

/// How long the check waits for an answer: below the healthcheck timeout of `compose.yaml`.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The arguments of `hypercode healthcheck`.
#[derive(clap::Args)]
pub struct HealthcheckArgs {
    /// Check `/readyz` (PostgreSQL and Redis answer too) instead of `/healthz`.
    #[arg(long)]
    ready: bool,
    /// The server's listen address; a wildcard address is checked on loopback.
    #[arg(long, env = "HYPERCODE_LISTEN", default_value = "127.0.0.1:8000")]
    listen: String,
}

/// Runs the check; problems are printed on stderr.
pub async fn run(args: HealthcheckArgs) -> ExitCode {
    let path = if args.ready { "/readyz" } else { "/healthz" };
    let url = format!("http://{}{path}", local_address(&args.listen));
    let answer = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(client) => client.get(&url).send().await,
        Err(e) => {
            eprintln!("healthcheck: {e}");
            return ExitCode::FAILURE;
        }
    };
    match answer {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("healthcheck: {url} answered {}", response.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where to reach a server listening on `listen` from the same machine: a wildcard host
/// (`0.0.0.0`, `[::]`, none) becomes loopback, the port stays.
fn local_address(listen: &str) -> String {
    let (host, port) = listen.rsplit_once(':').unwrap_or((listen, "8000"));
    match host {
        "" | "0.0.0.0" => format!("127.0.0.1:{port}"),
        "[::]" | "::" => format!("[::1]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_checked_on_loopback() {
        assert_eq!(local_address("0.0.0.0:8000"), "127.0.0.1:8000");
        assert_eq!(local_address(":9000"), "127.0.0.1:9000");
        assert_eq!(local_address("[::]:8000"), "[::1]:8000");
        assert_eq!(local_address("127.0.0.1:8001"), "127.0.0.1:8001");
        assert_eq!(local_address("api:8000"), "api:8000");
    }
}
