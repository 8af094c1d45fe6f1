//! The egress policy of plan HTTP calls: which destinations a plan may reach. It owns the
//! `HYPERCODE_EGRESS_ALLOW` / `HYPERCODE_EGRESS_DENY` entries (CIDRs, addresses, host names),
//! the decision about one destination, the DNS resolver that applies that decision to every
//! resolved address, and the plan's HTTP client built with that resolver.
//!
//! Precedence, for an address a call would connect to (IPv4-mapped IPv6 addresses count as the
//! IPv4 address they carry):
//! 1. an explicit deny entry (the address in a DENY CIDR, or the URL's host name in DENY) refuses;
//! 2. an explicit allow entry (the address in an ALLOW CIDR, or the host name in ALLOW) permits;
//! 3. the default denials refuse: the HyperCode server's own listen address (on every local
//!    address when it listens on `0.0.0.0` or `[::]`) and the host name it is reached by
//!    (`HYPERCODE_INTERNAL_URL`), except for a health probe ([`HEALTH_PATH`]), link-local addresses (`169.254.0.0/16`,
//!    `fe80::/10`, so cloud metadata at `169.254.169.254`), the other metadata endpoints
//!    ([`METADATA_ADDRESSES`], [`METADATA_NAMES`]) and the unspecified addresses (`0.0.0.0`, `::`,
//!    which reach this machine);
//! 4. anything else is allowed: loopback and private networks too, because agents usually live
//!    there.
//!
//! A name is checked before it is resolved and each of its addresses after (a name that
//! resolves to any refused address is refused without a connection); an IP-literal host never
//! reaches the resolver, so callers check every URL with [`EgressPolicy::check_url`] too. This
//! module never follows redirects: the plan's HTTP action does, checking every hop here.
//! It also hands the plans' calls the current step's W3C trace context (`trace_headers`).

use opentelemetry_http::HeaderInjector;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use url::{Host, Url};

/// The server's liveness probe: a `HEAD` of this path (no query) is the one request a plan may
/// send the HyperCode server itself. It changes nothing and its answer is a bare status, and it
/// lets a first plan (the dashboard's sample) run where no other service does. A probe's
/// connection is closed after it (`Connection: close`), so no other request reuses what it was
/// let open.
pub const HEALTH_PATH: &str = "/healthz";

/// Metadata endpoints outside link-local space (the link-local ones, such as AWS, GCP and
/// Azure's `169.254.169.254`, are refused as link-local): AWS's IPv6 endpoint and Alibaba
/// Cloud's.
pub const METADATA_ADDRESSES: [IpAddr; 2] = [
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
];

/// Metadata host names, refused by name before any lookup (they resolve to link-local space).
pub const METADATA_NAMES: [&str; 2] = ["metadata.google.internal", "metadata.goog"];

/// A bad entry in an allow or deny list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// Neither a CIDR, an IP address nor a host name.
    #[error("`{0}` is neither a CIDR (10.0.0.0/8, fd00::/8), an IP address nor a host name")]
    BadEntry(String),
}

/// A block of addresses: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` (already canonical) lies in the block.
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn same_prefix(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (whole, rest) = (usize::from(prefix / 8), prefix % 8);
    a[..whole] == b[..whole] && (rest == 0 || (a[whole] ^ b[whole]) & (0xff_u8 << (8 - rest)) == 0)
}

impl Cidr {
    /// The block of `prefix` bits at `network`; an IPv4-mapped block is the IPv4 block it
    /// carries, since candidates are compared mapped.
    fn new(network: IpAddr, prefix: u8) -> Option<Cidr> {
        let bits = if network.is_ipv4() { 32 } else { 128 };
        match canonical(network) {
            _ if prefix > bits => None,
            IpAddr::V4(v4) if network.is_ipv6() => (prefix >= 96).then(|| Cidr {
                network: IpAddr::V4(v4),
                prefix: prefix - 96,
            }),
            network => Some(Cidr { network, prefix }),
        }
    }
}

impl FromStr for Cidr {
    type Err = EgressError;

    fn from_str(entry: &str) -> Result<Self, EgressError> {
        let bad = || EgressError::BadEntry(entry.to_owned());
        let (address, prefix) = entry.split_once('/').ok_or_else(bad)?;
        let address = address.trim_start_matches('[').trim_end_matches(']');
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let prefix = prefix.parse().map_err(|_| bad())?;
        Cidr::new(network, prefix).ok_or_else(bad)
    }
}

/// One entry of `HYPERCODE_EGRESS_ALLOW` or `HYPERCODE_EGRESS_DENY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Addresses.
    Net(Cidr),
    /// A host name as written in URLs (matched exactly, case-insensitively).
    Host(String),
}

impl FromStr for Rule {
    type Err = EgressError;

    /// A CIDR (`10.0.0.0/8`), an address in any spelling a URL accepts (`::1`, `[::1]`,
    /// `2130706433`) or a host name.
    fn from_str(entry: &str) -> Result<Self, EgressError> {
        let bad = || EgressError::BadEntry(entry.to_owned());
        if entry.contains('/') {
            return entry.parse().map(Rule::Net);
        }
        let single = |ip: IpAddr| Cidr::new(ip, if ip.is_ipv4() { 32 } else { 128 });
        if let Ok(ip) = entry.parse::<IpAddr>() {
            return single(ip).map(Rule::Net).ok_or_else(bad);
        }
        match Host::parse(entry).map_err(|_| bad())? {
            Host::Ipv4(ip) => single(IpAddr::V4(ip)).map(Rule::Net).ok_or_else(bad),
            Host::Ipv6(ip) => single(IpAddr::V6(ip)).map(Rule::Net).ok_or_else(bad),
            Host::Domain(name) => {
                let name = host_name(&name);
                let label = |label: &str| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                };
                if name.split('.').all(label) {
                    Ok(Rule::Host(name))
                } else {
                    Err(bad())
                }
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Net(cidr) => write!(f, "{}/{}", cidr.network, cidr.prefix),
            Rule::Host(name) => f.write_str(name),
        }
    }
}

/// Parse a comma-separated list of entries (blank entries are ignored).
pub fn parse_rules(list: &str) -> Result<Vec<Rule>, EgressError> {
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(str::parse)
        .collect()
}

/// A host name as compared: lower case, without a trailing dot.
fn host_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The address a connection reaches: an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is the
/// IPv4 address it carries.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is an address of this machine: loopback, unspecified, or one that a socket can
/// bind (the kernel knows its own interface addresses, so this follows them as they change).
fn is_this_host(ip: IpAddr) -> bool {
    ip.is_loopback()
        || ip.is_unspecified()
        || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// An entry of `HYPERCODE_EGRESS_DENY`.
    Denied(String),
    /// The HyperCode server's own listen address.
    OwnAddress,
    /// Link-local space (cloud metadata lives there).
    LinkLocal,
    /// A cloud metadata endpoint.
    Metadata,
    /// `0.0.0.0` or `::`, which reach this machine.
    Unspecified,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Denied(entry) => write!(f, "HYPERCODE_EGRESS_DENY has `{entry}`"),
            Reason::OwnAddress => write!(
                f,
                "the HyperCode server's own address, where plans may only HEAD {HEALTH_PATH}"
            ),
            Reason::LinkLocal => f.write_str("a link-local address, where cloud metadata lives"),
            Reason::Metadata => f.write_str("a cloud metadata endpoint"),
            Reason::Unspecified => {
                f.write_str("the unspecified address, which reaches this machine")
            }
        }
    }
}

/// A destination the egress policy refuses; a step that meets one fails for good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("egress policy refused {target} ({reason})")]
pub struct Refused {
    /// What was refused: `127.0.0.1:8000`, or `localhost at 127.0.0.1:8000` after a lookup.
    pub target: String,
    /// Why.
    pub reason: Reason,
}

/// What the policy judges of one request besides its host: the port it goes to and whether it
/// is a health probe of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Destination {
    port: Option<u16>,
    health_probe: bool,
}

impl Destination {
    /// A request of `method` to `url`.
    pub fn of(method: &reqwest::Method, url: &Url) -> Self {
        Self {
            port: url.port_or_known_default(),
            health_probe: *method == reqwest::Method::HEAD
                && url.path() == HEALTH_PATH
                && url.query().is_none(),
        }
    }

    /// Whether the request is a health probe, which may reach the server itself.
    pub fn is_health_probe(&self) -> bool {
        self.health_probe
    }
}

/// The policy: allow and deny entries, the server's own listen addresses and the host names
/// it is reached by.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
    own: Vec<SocketAddr>,
    own_names: Vec<String>,
}

impl EgressPolicy {
    /// A policy with these entries, refusing the server's `own` listen addresses (a port of 0
    /// is no address: nothing to refuse).
    pub fn new(allow: Vec<Rule>, deny: Vec<Rule>, own: Vec<SocketAddr>) -> Self {
        let own = own.into_iter().filter(|addr| addr.port() != 0).collect();
        Self {
            allow,
            deny,
            own,
            own_names: Vec::new(),
        }
    }

    /// The policy that also counts `url`, where this deployment's workers reach its API
    /// (`HYPERCODE_INTERNAL_URL`, e.g. `http://api:8000` under compose), as the server itself:
    /// its host name on any port, or its address on its port.
    pub fn reached_at(mut self, url: &Url) -> Self {
        let port = url.port_or_known_default().unwrap_or(0);
        match url.host() {
            Some(Host::Domain(name)) => self.own_names.push(host_name(name)),
            Some(Host::Ipv4(ip)) if port != 0 => self.own.push(SocketAddr::new(ip.into(), port)),
            Some(Host::Ipv6(ip)) if port != 0 => self.own.push(SocketAddr::new(ip.into(), port)),
            _ => {}
        }
        self
    }

    /// Check the host of any request to `url` that is not a health probe: an IP literal
    /// completely, a name by its name entries (its addresses are checked when it is resolved).
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        self.check(
            url,
            Destination {
                port: url.port_or_known_default(),
                health_probe: false,
            },
        )
    }

    /// Check the host of a request to `url` going to `destination`.
    pub fn check(&self, url: &Url, destination: Destination) -> Result<(), Refused> {
        match url.host() {
            Some(Host::Ipv4(ip)) => self.check_address(IpAddr::V4(ip), destination, false, None),
            Some(Host::Ipv6(ip)) => self.check_address(IpAddr::V6(ip), destination, false, None),
            Some(Host::Domain(name)) => self.check_name(name, destination).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Check a host name before it is resolved; `Ok(true)` when an allow entry names it, so
    /// that its addresses skip the default denials.
    fn check_name(&self, name: &str, destination: Destination) -> Result<bool, Refused> {
        let name = host_name(name);
        let refuse = |reason| Refused {
            target: name.clone(),
            reason,
        };
        let named = |rules: &[Rule]| {
            rules
                .iter()
                .find(|rule| matches!(rule, Rule::Host(host) if *host == name))
                .cloned()
        };
        if let Some(rule) = named(&self.deny) {
            return Err(refuse(Reason::Denied(rule.to_string())));
        }
        if named(&self.allow).is_some() {
            return Ok(true);
        }
        if METADATA_NAMES.contains(&name.as_str()) {
            return Err(refuse(Reason::Metadata));
        }
        if !destination.health_probe && self.own_names.contains(&name) {
            return Err(refuse(Reason::OwnAddress));
        }
        Ok(false)
    }

    /// Check an address a call to `destination` would connect to, on its port when known (when
    /// not, every own port counts, failing closed). `name` is the host name it was resolved
    /// from, if any, and `name_allowed` whether an allow entry names that host.
    fn check_address(
        &self,
        ip: IpAddr,
        destination: Destination,
        name_allowed: bool,
        name: Option<&str>,
    ) -> Result<(), Refused> {
        let ip = canonical(ip);
        let port = destination.port;
        let refuse = |reason| {
            let address = match port {
                Some(port) => SocketAddr::new(ip, port).to_string(),
                None => ip.to_string(),
            };
            let target = match name {
                Some(name) => format!("{name} at {address}"),
                None => address,
            };
            Err(Refused { target, reason })
        };
        let in_block = |rules: &[Rule]| {
            rules
                .iter()
                .find(|rule| matches!(rule, Rule::Net(cidr) if cidr.contains(ip)))
                .cloned()
        };
        if let Some(rule) = in_block(&self.deny) {
            return refuse(Reason::Denied(rule.to_string()));
        }
        if name_allowed || in_block(&self.allow).is_some() {
            return Ok(());
        }
        if !destination.health_probe && self.is_own(ip, port) {
            return refuse(Reason::OwnAddress);
        }
        if is_link_local(ip) {
            return refuse(Reason::LinkLocal);
        }
        if METADATA_ADDRESSES.contains(&ip) {
            return refuse(Reason::Metadata);
        }
        if ip.is_unspecified() {
            return refuse(Reason::Unspecified);
        }
        Ok(())
    }

    /// Whether a connection to `ip` (canonical) on `port` reaches the server's own listener.
    fn is_own(&self, ip: IpAddr, port: Option<u16>) -> bool {
        self.own.iter().any(|own| {
            port.is_none_or(|port| port == own.port())
                && (ip == canonical(own.ip())
                    // Connecting to 0.0.0.0 or :: reaches this machine's listeners.
                    || ip.is_unspecified()
                    || (own.ip().is_unspecified() && is_this_host(ip)))
        })
    }
}

/// What a resolver may fail with.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

tokio::task_local! {
    /// Where the request being sent goes, for the resolver, which is given only a name.
    static DESTINATION: Destination;
}

/// Run `send` (a request on an [`EgressClient`]) so that its DNS lookups know its destination
/// (the port, and whether it is a health probe), which the check of the server's own address
/// needs. Without it, every own port counts and nothing is a probe.
pub(crate) async fn to<F: Future>(destination: Destination, send: F) -> F::Output {
    DESTINATION.scope(destination, send).await
}

/// The DNS resolver of the plan's client: it refuses denied names, resolves the others and
/// refuses a name any of whose addresses the policy refuses (a name that mixes such an address
/// with others is not to be trusted, and a clear refusal beats a connection error from the
/// rest). It runs after resolution, for every connection the client opens: every redirect hop.
#[derive(Debug)]
struct PolicyResolver {
    policy: Arc<EgressPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let name = name.as_str().to_owned();
        // Read now: the lookup below may be polled outside the request's task-local scope.
        let destination = DESTINATION.try_with(|d| *d).unwrap_or_default();
        Box::pin(async move {
            let name_allowed = policy.check_name(&name, destination)?;
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            for address in &addresses {
                policy.check_address(address.ip(), destination, name_allowed, Some(&name))?;
            }
            Ok::<Addrs, BoxError>(Box::new(addresses.into_iter()))
        })
    }
}

/// The plan's outbound HTTP client: the caller's settings (user agent, ...) plus the policy's
/// resolver, no automatic redirects (the caller follows them, checking every hop) and no proxy
/// (a proxy would resolve names out of the policy's sight).
#[derive(Debug, Clone)]
pub struct EgressClient {
    http: reqwest::Client,
    policy: Arc<EgressPolicy>,
}

impl EgressClient {
    /// Build the client from `builder` under `policy`.
    pub fn new(builder: reqwest::ClientBuilder, policy: EgressPolicy) -> reqwest::Result<Self> {
        let policy = Arc::new(policy);
        let http = builder
            .dns_resolver(Arc::new(PolicyResolver {
                policy: policy.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Self { http, policy })
    }

    /// The HTTP client.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The policy it applies.
    pub(crate) fn policy(&self) -> &EgressPolicy {
        &self.policy
    }
}

/// The W3C trace-context headers (`traceparent`, and `tracestate` when there is one) of the
/// current span, a step's, so the callee joins the step's trace. Empty when spans are not
/// exported (no propagator is installed then).
pub(crate) fn trace_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(&mut headers));
    });
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &str) -> Vec<Rule> {
        parse_rules(list).expect("valid entries")
    }

    fn own(listen: &str) -> EgressPolicy {
        EgressPolicy::new(
            Vec::new(),
            Vec::new(),
            vec![listen.parse().expect("address")],
        )
    }

    fn at(port: Option<u16>) -> Destination {
        Destination {
            port,
            health_probe: false,
        }
    }

    fn check(policy: &EgressPolicy, url: &str) -> Result<(), Reason> {
        let url = Url::parse(url).expect("URL");
        policy.check_url(&url).map_err(|e| e.reason)
    }

    #[test]
    fn every_spelling_of_the_own_address_normalises_to_it() {
        let policy = own("127.0.0.1:8000");
        for host in [
            "127.0.0.1",
            "2130706433",
            "0x7f.1",
            "0x7f000001",
            "0177.0.0.1",
            "127.1",
            "127.0.1",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[0:0:0:0:0:ffff:7f00:0001]",
            "0.0.0.0",
            "[::]",
        ] {
            let url = format!("http://{host}:8000/healthz");
            assert_eq!(check(&policy, &url), Err(Reason::OwnAddress), "{url}");
        }
        assert_eq!(check(&policy, "http://127.0.0.1:8001/"), Ok(()));
        assert_eq!(check(&policy, "http://127.0.0.2:8000/"), Ok(()));
        assert_eq!(check(&policy, "http://[::1]:8000/"), Ok(()));
        assert_eq!(
            check(&own("127.0.0.1:80"), "http://127.0.0.1/"),
            Err(Reason::OwnAddress),
            "the scheme's default port counts"
        );
        assert_eq!(
            canonical("::ffff:10.1.2.3".parse().unwrap()),
            IpAddr::from([10, 1, 2, 3])
        );
    }

    #[test]
    fn listening_on_every_address_refuses_every_local_address_on_that_port() {
        for listen in ["0.0.0.0:8000", "[::]:8000"] {
            let policy = own(listen);
            for url in [
                "http://127.0.0.1:8000/",
                "http://127.9.9.9:8000/",
                "http://[::1]:8000/",
                "http://[::ffff:127.0.0.1]:8000/",
                "http://0.0.0.0:8000/",
            ] {
                assert_eq!(
                    check(&policy, url),
                    Err(Reason::OwnAddress),
                    "{listen} {url}"
                );
            }
            assert_eq!(check(&policy, "http://127.0.0.1:8001/"), Ok(()), "{listen}");
            // TEST-NET-1 is never assigned to a machine.
            assert_eq!(check(&policy, "http://192.0.2.1:8000/"), Ok(()), "{listen}");
        }
    }

    #[test]
    fn an_unknown_port_fails_closed() {
        let policy = own("127.0.0.1:8000");
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert!(policy
            .check_address(ip, at(None), false, Some("localhost"))
            .is_err());
        assert!(policy
            .check_address(ip, at(Some(9000)), false, Some("localhost"))
            .is_ok());
    }

    #[test]
    fn link_local_metadata_and_unspecified_are_refused_by_default() {
        let policy = EgressPolicy::default();
        for (url, reason) in [
            ("http://169.254.169.254/latest/", Reason::LinkLocal),
            ("http://[::ffff:169.254.169.254]/", Reason::LinkLocal),
            ("http://[fe80::1]/", Reason::LinkLocal),
            ("http://[febf::1]/", Reason::LinkLocal),
            ("http://[fd00:ec2::254]/", Reason::Metadata),
            ("http://100.100.100.200/", Reason::Metadata),
            ("http://metadata.google.internal/", Reason::Metadata),
            ("http://Metadata.Google.Internal./", Reason::Metadata),
            ("http://0.0.0.0/", Reason::Unspecified),
        ] {
            assert_eq!(check(&policy, url), Err(reason), "{url}");
        }
        for url in [
            "http://127.0.0.1:8000/",
            "http://10.1.2.3/",
            "http://192.168.1.1/",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[fec0::1]/",
            "http://agent.internal/",
        ] {
            assert_eq!(check(&policy, url), Ok(()), "{url}");
        }
    }

    #[test]
    fn deny_wins_over_allow_which_wins_over_the_defaults() {
        let policy = EgressPolicy::new(
            rules("169.254.169.254, 10.0.0.0/8, agent.example"),
            rules("10.9.0.0/16, agent.example, ::ffff:192.168.0.0/112"),
            vec!["127.0.0.1:8000".parse().unwrap()],
        );
        assert_eq!(check(&policy, "http://169.254.169.254/"), Ok(()));
        assert_eq!(
            check(&policy, "http://169.254.169.253/"),
            Err(Reason::LinkLocal)
        );
        assert_eq!(check(&policy, "http://10.1.0.1/"), Ok(()));
        assert_eq!(
            check(&policy, "http://10.9.0.1/"),
            Err(Reason::Denied("10.9.0.0/16".to_owned()))
        );
        assert_eq!(
            check(&policy, "http://AGENT.example/"),
            Err(Reason::Denied("agent.example".to_owned()))
        );
        assert_eq!(
            check(&policy, "http://192.168.3.4/"),
            Err(Reason::Denied("192.168.0.0/16".to_owned())),
            "a mapped block is its IPv4 block"
        );
        let allowed = EgressPolicy::new(rules("127.0.0.1"), Vec::new(), policy.own.clone());
        assert_eq!(check(&allowed, "http://127.0.0.1:8000/"), Ok(()));
    }

    #[test]
    fn an_allowed_name_skips_the_default_denials_of_its_addresses() {
        let policy = EgressPolicy::new(rules("metadata.google.internal"), Vec::new(), Vec::new());
        assert_eq!(check(&policy, "http://metadata.google.internal/"), Ok(()));
        let ip = IpAddr::from([169, 254, 169, 254]);
        assert!(policy
            .check_address(ip, at(Some(80)), true, Some("metadata.google.internal"))
            .is_ok());
        assert!(policy.check_address(ip, at(Some(80)), false, None).is_err());
    }

    #[test]
    fn only_a_health_probe_reaches_the_server_itself() {
        let policy = own("127.0.0.1:8000");
        let judge = |method: reqwest::Method, url: &str| {
            let url = Url::parse(url).expect("URL");
            policy
                .check(&url, Destination::of(&method, &url))
                .map_err(|e| e.reason)
        };
        assert_eq!(
            judge(reqwest::Method::HEAD, "http://127.0.0.1:8000/healthz"),
            Ok(())
        );
        for (method, url) in [
            (reqwest::Method::GET, "http://127.0.0.1:8000/healthz"),
            (reqwest::Method::POST, "http://127.0.0.1:8000/healthz"),
            (reqwest::Method::HEAD, "http://127.0.0.1:8000/healthz?x=1"),
            (reqwest::Method::HEAD, "http://127.0.0.1:8000/healthz/"),
            (
                reqwest::Method::GET,
                "http://127.0.0.1:8000/api/v1/missions",
            ),
            (reqwest::Method::HEAD, "http://127.0.0.1:8000/readyz"),
        ] {
            assert_eq!(
                judge(method.clone(), url),
                Err(Reason::OwnAddress),
                "{method} {url}"
            );
        }
        // A probe is no pass for what else the policy refuses.
        assert_eq!(
            judge(reqwest::Method::HEAD, "http://169.254.169.254/healthz"),
            Err(Reason::LinkLocal)
        );
    }

    #[test]
    fn the_internal_url_counts_as_the_server_by_name_on_every_port() {
        let policy = EgressPolicy::default()
            .reached_at(&Url::parse("http://API:8000").expect("URL"))
            .reached_at(&Url::parse("http://10.1.2.3:8080").expect("URL"));
        for url in [
            "http://api:8000/api/v1/missions",
            "http://api./",
            "http://10.1.2.3:8080/",
        ] {
            assert_eq!(check(&policy, url), Err(Reason::OwnAddress), "{url}");
        }
        assert_eq!(check(&policy, "http://10.1.2.3:8081/"), Ok(()));
        assert_eq!(check(&policy, "http://apis:8000/"), Ok(()));
        let probe = Url::parse("http://api:8000/healthz").expect("URL");
        assert_eq!(
            policy.check(&probe, Destination::of(&reqwest::Method::HEAD, &probe)),
            Ok(())
        );
        let allowed = EgressPolicy::new(rules("api"), Vec::new(), Vec::new())
            .reached_at(&Url::parse("http://api:8000").expect("URL"));
        assert_eq!(
            check(&allowed, "http://api:8000/x"),
            Ok(()),
            "an allow entry wins"
        );
    }

    #[tokio::test]
    async fn the_resolver_checks_every_address_on_the_requested_port() {
        let resolver = PolicyResolver {
            policy: Arc::new(own("127.0.0.1:8000")),
        };
        // As the client does: the resolver is called while the request is polled.
        let lookup = |port| {
            let name: Name = "localhost".parse().expect("a name");
            to(at(Some(port)), async { resolver.resolve(name).await })
        };
        let refusal = lookup(8000).await.err().expect("the server's own address");
        let refusal = refusal.downcast_ref::<Refused>().expect("a refusal");
        assert_eq!(refusal.reason, Reason::OwnAddress);
        assert_eq!(refusal.target, "localhost at 127.0.0.1:8000");
        let addresses: Vec<SocketAddr> = lookup(9000).await.expect("another port").collect();
        let probe = Url::parse("http://localhost:8000/healthz").expect("URL");
        let probing = to(Destination::of(&reqwest::Method::HEAD, &probe), async {
            resolver.resolve("localhost".parse().expect("a name")).await
        });
        assert!(
            probing.await.is_ok(),
            "a health probe resolves the server's own address"
        );
        assert!(
            addresses.iter().any(|a| a.ip().is_loopback()),
            "{addresses:?}"
        );
        let outside: Name = "localhost".parse().expect("a name");
        assert!(
            resolver.resolve(outside).await.is_err(),
            "without the port, every own port counts"
        );
        let metadata: Name = "metadata.google.internal".parse().expect("a name");
        let refusal = resolver
            .resolve(metadata)
            .await
            .err()
            .expect("refused by name");
        assert!(refusal.to_string().contains("cloud metadata"), "{refusal}");
    }

    #[test]
    fn entries_parse_as_cidrs_addresses_or_names() {
        assert_eq!(
            rules(" 10.0.0.0/8 ,, fd00::/8, [::1], 2130706433, 192.168.1.1, Agent.Example. "),
            [
                Rule::Net("10.0.0.0/8".parse().unwrap()),
                Rule::Net("fd00::/8".parse().unwrap()),
                Rule::Net("::1/128".parse().unwrap()),
                Rule::Net("127.0.0.1/32".parse().unwrap()),
                Rule::Net("192.168.1.1/32".parse().unwrap()),
                Rule::Host("agent.example".to_owned()),
            ]
        );
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/x",
            "http://a/",
            "a b",
            "a..b",
            "::ffff:1.2.3.4/95",
        ] {
            assert_eq!(
                parse_rules(bad),
                Err(EgressError::BadEntry(bad.to_owned())),
                "{bad}"
            );
        }
        let cidr: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(cidr.contains(IpAddr::from([10, 255, 0, 1])));
        assert!(!cidr.contains(IpAddr::from([11, 0, 0, 1])));
        let odd: Cidr = "172.16.0.0/12".parse().unwrap();
        assert!(odd.contains(IpAddr::from([172, 31, 255, 255])));
        assert!(!odd.contains(IpAddr::from([172, 32, 0, 0])));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(IpAddr::from([8, 8, 8, 8])));
        assert!(!all.contains("::1".parse().unwrap()));
    }
}
