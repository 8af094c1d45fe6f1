//! Headless Chromium driven through `chromedriver` (WebDriver, via fantoccini), for the
//! dashboard's end-to-end tests.
//!
//! Each [`Browser`] owns its own `chromedriver` child (on a free port, in its own process group,
//! killed with its Chromium when the browser is dropped) and one WebDriver session. Pages are
//! addressed by path on the harness's API server; screenshots go to
//! `$HYPERCODE_TEST_OUTPUT_DIR` (default `<workspace>/target/test-output`)
//! `/dashboard/<test>/NN-<name>.png`. When a test panics, the browser also saves
//! `failure.png`, `failure.html` and the browser console log there, and prints the directory.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`chromedriver`); `CHROMEDRIVER` and
//! `CHROMIUM` override the programs used. A missing program fails the test with an install hint:
//! browser tests are never skipped silently.

#![allow(dead_code)]

use base64::Engine as _;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a wait lasts before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);

/// How often waits poll the page.
const POLL: Duration = Duration::from_millis(100);

/// Desktop viewport.
pub const DESKTOP: (u32, u32) = (1280, 900);

/// Phone viewport (CSS pixels).
pub const PHONE: (u32, u32) = (390, 844);

/// A signed-in page (`body[data-role]` names a role; signed out it is absent or empty).
pub const SIGNED_IN: &str =
    "body[data-role=admin], body[data-role=operator], body[data-role=viewer]";

/// The directory this test's screenshots go to.
pub fn output_dir(test: &str) -> PathBuf {
    let root = std::env::var_os("HYPERCODE_TEST_OUTPUT_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target")
                .join("test-output")
        });
    root.join("dashboard").join(test)
}

/// `$ENV`, else `name` on `PATH`, else the first existing fallback.
fn find_program(env: &str, name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(name));
    on_path
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("find a free port")
        .port()
}

/// A plain HTTP client for chromedriver's own endpoints (never through a proxy).
fn driver_http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// The `chromedriver` child: its process group (Chromium included) is killed on drop.
struct Driver {
    child: tokio::process::Child,
    pid: Option<u32>,
    url: String,
    log: PathBuf,
}

impl Driver {
    async fn start(program: &Path, out: &Path) -> Driver {
        let mut last_log = String::new();
        for attempt in 1..=3 {
            let port = free_port();
            let log = out.join("chromedriver.log");
            let file = std::fs::File::create(&log).expect("create the chromedriver log");
            let child = tokio::process::Command::new(program)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(file.try_clone().expect("clone the log file"))
                .stderr(file)
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "could not run {}: {e}\n\
                         The dashboard tests need Debian's `chromium` and `chromium-driver` \
                         (apt-get install chromium chromium-driver; `source scripts/services.sh` \
                         installs them when run as root).",
                        program.display()
                    )
                });
            let pid = child.id();
            let mut driver = Driver {
                child,
                pid,
                url: format!("http://127.0.0.1:{port}"),
                log,
            };
            if driver.wait_ready().await {
                return driver;
            }
            last_log = std::fs::read_to_string(&driver.log).unwrap_or_default();
            eprintln!("chromedriver attempt {attempt} on port {port} did not come up:\n{last_log}");
        }
        panic!("chromedriver did not answer on its port after 3 attempts; its log:\n{last_log}");
    }

    /// Wait until `/status` says ready; false if the process exited or 20 s passed.
    async fn wait_ready(&mut self) -> bool {
        let http = driver_http();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(response) = http.get(format!("{}/status", self.url)).send().await {
                if let Ok(status) = response.json::<Value>().await {
                    if status["value"]["ready"] == true {
                        return true;
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
        false
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // The group we created for chromedriver: chromedriver and the Chromium it started.
            let group = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.child.start_kill();
    }
}

/// One headless Chromium session on the dashboard.
pub struct Browser {
    /// The WebDriver client.
    pub client: Client,
    /// `http://127.0.0.1:PORT` of the dashboard.
    pub base: String,
    /// Where screenshots go.
    pub out: PathBuf,
    session: String,
    shots: AtomicUsize,
    closed: bool,
    // Dropped last: kills chromedriver and Chromium.
    driver: Driver,
}

impl Browser {
    /// Start chromedriver and a headless Chromium for the test `test`, on the dashboard at
    /// `base`. Clears the test's output directory.
    pub async fn start(test: &str, base: &str) -> Browser {
        let out = output_dir(test);
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out)
            .unwrap_or_else(|e| panic!("create the output directory {}: {e}", out.display()));
        let hint = "The dashboard tests need Debian's `chromium` and `chromium-driver`: \
                    apt-get install chromium chromium-driver (`source scripts/services.sh` \
                    installs them when run as root), or set CHROMEDRIVER / CHROMIUM.";
        let chromedriver = find_program(
            "CHROMEDRIVER",
            "chromedriver",
            &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
        )
        .unwrap_or_else(|| panic!("chromedriver not found. {hint}"));
        let chromium = find_program(
            "CHROMIUM",
            "chromium",
            &["/usr/bin/chromium", "/usr/lib/chromium/chromium"],
        )
        .unwrap_or_else(|| panic!("chromium not found. {hint}"));

        let driver = Driver::start(&chromedriver, &out).await;
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("pageLoadStrategy".into(), json!("normal"));
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium.to_string_lossy(),
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--no-proxy-server",
                    "--disable-extensions",
                    "--password-store=basic",
                    "--lang=en-US",
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = match ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url)
            .await
        {
            Ok(client) => client,
            Err(e) => panic!(
                "could not start {} through {}: {e}\nchromedriver log:\n{}",
                chromium.display(),
                chromedriver.display(),
                std::fs::read_to_string(&driver.log).unwrap_or_default()
            ),
        };
        let session = client
            .session_id()
            .await
            .expect("session id")
            .expect("a WebDriver session");
        Browser {
            client,
            base: base.trim_end_matches('/').to_owned(),
            out,
            session,
            shots: AtomicUsize::new(0),
            closed: false,
            driver,
        }
    }

    /// End the session (closes Chromium) and print where the screenshots are.
    pub async fn finish(mut self) {
        self.closed = true;
        let _ = self.client.clone().close().await;
        println!("dashboard screenshots: {}", self.out.display());
    }

    // --------------------------------------------------------------------------------------
    // Navigation and reading the page.
    // --------------------------------------------------------------------------------------

    /// An absolute URL on the dashboard.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Load a page by path (`/approvals`).
    pub async fn goto(&self, path: &str) {
        let url = self.url(path);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("navigate to {url}: {e}"));
    }

    /// The current path and query (`/missions/…`, `/?next=%2Fapprovals`).
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current URL");
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// A query parameter of the current URL, decoded.
    pub async fn query_param(&self, name: &str) -> Option<String> {
        let url = self.client.current_url().await.expect("current URL");
        url.query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }

    /// Run a script (`return …` for a value); `arguments[i]` are `args`.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        match self.client.execute(script, args).await {
            Ok(value) => value,
            Err(e) => panic!(
                "script failed: {e}\nscript: {script}\n{}",
                self.context().await
            ),
        }
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        self.js(
            "return document.querySelectorAll(arguments[0]).length;",
            vec![json!(css)],
        )
        .await
        .as_u64()
        .unwrap_or(0) as usize
    }

    /// The first element matching `css` now, if any.
    pub async fn find(&self, css: &str) -> Option<Element> {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => Some(element),
            Err(e) if e.is_no_such_element() => None,
            Err(e) => panic!("find `{css}`: {e}\n{}", self.context().await),
        }
    }

    /// An attribute of the first element matching `css` (`None`: no such element or attribute).
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.js(
            "const e = document.querySelector(arguments[0]); \
             return e ? e.getAttribute(arguments[1]) : null;",
            vec![json!(css), json!(name)],
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    /// The rendered text (`innerText`) of the first element matching `css`; panics if absent.
    pub async fn text(&self, css: &str) -> String {
        let value = self
            .js(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
                vec![json!(css)],
            )
            .await;
        match value.as_str() {
            Some(text) => text.to_owned(),
            None => panic!("no element `{css}` to read\n{}", self.context().await),
        }
    }

    /// The `<meta name="csrf-token">` of the page.
    pub async fn csrf(&self) -> String {
        match self.attr("meta[name=csrf-token]", "content").await {
            Some(token) if !token.is_empty() => token,
            _ => panic!(
                "the page has no <meta name=\"csrf-token\" content=…>\n{}",
                self.context().await
            ),
        }
    }

    /// Where we are and what the page shows: for failure messages.
    pub async fn context(&self) -> String {
        let url = match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(e) => format!("<unknown: {e}>"),
        };
        let source = self.client.source().await.unwrap_or_default();
        let snippet = snippet(&source, 4000);
        format!("page URL: {url}\npage source (first 4000 characters):\n{snippet}")
    }

    // --------------------------------------------------------------------------------------
    // Waiting.
    // --------------------------------------------------------------------------------------

    /// Wait (at most [`WAIT`]) for an element matching `css`.
    pub async fn wait_for(&self, css: &str) -> Element {
        self.wait_for_within(css, WAIT).await
    }

    /// Wait at most `timeout` for an element matching `css`.
    pub async fn wait_for_within(&self, css: &str, timeout: Duration) -> Element {
        self.poll(&format!("`{css}`"), timeout, async || {
            self.find(css).await.ok_or_else(|| "absent".to_owned())
        })
        .await
    }

    /// Wait until no element matches `css`.
    pub async fn wait_gone(&self, css: &str) {
        self.poll(&format!("`{css}` to go away"), WAIT, async || {
            match self.count(css).await {
                0 => Ok(()),
                n => Err(format!("{n} still there")),
            }
        })
        .await
    }

    /// Wait until the JavaScript expression `expr` is truthy (`what` names it for the failure).
    pub async fn wait_js(&self, what: &str, expr: &str) -> Value {
        let script = format!("return ({expr});");
        self.poll(what, WAIT, async || {
            let value = self.js(&script, vec![]).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                Ok(value)
            } else {
                Err(format!("`{expr}` was {value}"))
            }
        })
        .await
    }

    /// Wait until the current path satisfies `pred`; returns it.
    pub async fn wait_path(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.poll(&format!("the browser to be at {what}"), WAIT, async || {
            let path = self.path().await;
            if pred(&path) {
                Ok(path)
            } else {
                Err(format!("at {path}"))
            }
        })
        .await
    }

    /// Run `probe` every [`POLL`] until it succeeds; after `timeout`, save a failure screenshot
    /// and panic with what was awaited, the last thing observed (`probe`'s error) and the page.
    async fn poll<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl AsyncFnMut() -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match probe().await {
                Ok(value) => return value,
                Err(last) => last,
            };
            if Instant::now() > deadline {
                self.fail_shot("wait").await;
                panic!(
                    "timed out after {timeout:?} waiting for {what} ({last})\n{}",
                    self.context().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    // --------------------------------------------------------------------------------------
    // Acting.
    // --------------------------------------------------------------------------------------

    /// Click the first element matching `css` (waiting for it).
    pub async fn click(&self, css: &str) {
        let element = self.wait_for(css).await;
        if let Err(e) = element.click().await {
            panic!("click `{css}`: {e}\n{}", self.context().await);
        }
    }

    /// Clear the field matching `css` and type `text` into it, as a user would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.wait_for(css).await;
        if let Err(e) = element.clear().await {
            panic!("clear `{css}`: {e}\n{}", self.context().await);
        }
        if let Err(e) = element.send_keys(text).await {
            panic!("type into `{css}`: {e}\n{}", self.context().await);
        }
    }

    /// Choose the option with this value in the `<select>` matching `css`.
    pub async fn select(&self, css: &str, value: &str) {
        let element = self.wait_for(css).await;
        if let Err(e) = element.select_by_value(value).await {
            panic!("select `{value}` in `{css}`: {e}\n{}", self.context().await);
        }
    }

    /// Sign in on the login page with `key`; waits for a signed-in page and returns its
    /// `body[data-role]`.
    pub async fn login(&self, key: &str) -> String {
        if self.count("form#login").await == 0 {
            self.goto("/").await;
        }
        self.type_into("form#login input[name=key]", key).await;
        self.click("form#login button[type=submit]").await;
        self.wait_for(SIGNED_IN).await;
        self.attr("body", "data-role").await.unwrap_or_default()
    }

    /// Sign out with the `#logout` form; waits for the login page.
    pub async fn logout(&self) {
        self.click("#logout button, #logout [type=submit]").await;
        self.wait_for("form#login").await;
    }

    /// `fetch` from the page (same origin, with its cookies): a form-encoded POST of `form` with
    /// `headers`; redirects are not followed (a redirect reads as status 0, type
    /// `opaqueredirect`). Returns `{status, type, body}`.
    pub async fn fetch_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Value {
        let form: serde_json::Map<String, Value> = form
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let headers: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        self.js(
            "const [path, form, headers] = arguments;
             return fetch(path, {
                 method: 'POST', body: new URLSearchParams(form), headers,
                 credentials: 'same-origin', redirect: 'manual',
             }).then(async (r) => ({ status: r.status, type: r.type, body: await r.text() }));",
            vec![json!(path), Value::Object(form), Value::Object(headers)],
        )
        .await
    }

    /// Set a marker on `window`: it disappears if the page is reloaded or left.
    pub async fn mark_no_reload(&self) {
        self.js("window.__noReload = true; return true;", vec![])
            .await;
    }

    /// Assert the marker of [`Browser::mark_no_reload`] is still there.
    pub async fn assert_not_reloaded(&self, what: &str) {
        let marker = self.js("return window.__noReload === true;", vec![]).await;
        assert_eq!(
            marker,
            json!(true),
            "the page was reloaded or left while {what}\n{}",
            self.context().await
        );
    }

    // --------------------------------------------------------------------------------------
    // Viewport, colour scheme, screenshots.
    // --------------------------------------------------------------------------------------

    /// Run a Chrome DevTools Protocol command through chromedriver.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        let url = format!(
            "{}/session/{}/goog/cdp/execute",
            self.driver.url, self.session
        );
        let response = driver_http()
            .post(&url)
            .json(&json!({ "cmd": cmd, "params": params }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("CDP {cmd}: {e}"));
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "CDP {cmd} failed ({status}): {body}");
        body["value"].clone()
    }

    /// Emulate a phone (390×844 CSS pixels, mobile, touch) until [`Browser::desktop`].
    pub async fn phone(&self) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": PHONE.0, "height": PHONE.1, "deviceScaleFactor": 2, "mobile": true }),
        )
        .await;
        self.cdp(
            "Emulation.setTouchEmulationEnabled",
            json!({ "enabled": true, "maxTouchPoints": 5 }),
        )
        .await;
    }

    /// Back to the desktop viewport.
    pub async fn desktop(&self) {
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({}))
            .await;
        self.cdp(
            "Emulation.setTouchEmulationEnabled",
            json!({ "enabled": false }),
        )
        .await;
    }

    /// Emulate `prefers-color-scheme: dark` (or undo it).
    pub async fn dark(&self, on: bool) {
        let value = if on { "dark" } else { "light" };
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": value }] }),
        )
        .await;
        let matches = self
            .js(
                "return matchMedia('(prefers-color-scheme: dark)').matches;",
                vec![],
            )
            .await;
        assert_eq!(
            matches,
            json!(on),
            "could not emulate prefers-color-scheme: {value}"
        );
    }

    /// Assert the page is laid out for a phone: the viewport is 390 CSS pixels wide (the page
    /// has a `width=device-width` viewport) and nothing overflows sideways.
    pub async fn assert_fits_phone(&self, page: &str) {
        let metrics = self
            .js(
                "const root = document.scrollingElement || document.documentElement;
                 return { inner: document.documentElement.clientWidth,
                          scroll: Math.max(root.scrollWidth, document.documentElement.scrollWidth) };",
                vec![],
            )
            .await;
        let inner = metrics["inner"].as_u64().unwrap_or(0);
        let scroll = metrics["scroll"].as_u64().unwrap_or(0);
        assert_eq!(
            inner,
            u64::from(PHONE.0),
            "{page} at phone width: the layout viewport is {inner}px wide, not {}px \
             (is <meta name=viewport content=\"width=device-width\"> missing?)\n{}",
            PHONE.0,
            self.context().await
        );
        if scroll > inner + 1 {
            let wide = self
                .js(
                    "const w = document.documentElement.clientWidth; const out = [];
                     for (const e of document.querySelectorAll('body *')) {
                       const r = e.getBoundingClientRect();
                       if (r.right > w + 1 && r.width > 0) {
                         out.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
                           (e.className && typeof e.className === 'string' ? '.' + e.className.trim().split(/\\s+/).join('.') : '') +
                           ' right=' + Math.round(r.right));
                       }
                       if (out.length >= 8) break;
                     }
                     return out;",
                    vec![],
                )
                .await;
            let shot = self.screenshot(&format!("{page}-overflow")).await;
            panic!(
                "{page} at phone width: the page is {scroll}px wide in a {inner}px viewport \
                 (it scrolls sideways); widest elements: {wide}\nscreenshot: {}\n{}",
                shot.display(),
                self.context().await
            );
        }
    }

    /// The colour contrast of every visible text on the page: returns the overall page
    /// background's luminance and the worst contrasts (WCAG ratio), worst first.
    pub async fn contrast(&self) -> Value {
        self.js(CONTRAST_JS, vec![]).await
    }

    /// Assert every visible text has a contrast ratio of at least `min` against its
    /// background.
    pub async fn assert_readable(&self, page: &str, min: f64) -> Value {
        let report = self.contrast().await;
        let worst = report["worst"].as_array().cloned().unwrap_or_default();
        let checked = report["checked"].as_u64().unwrap_or(0);
        assert!(checked > 0, "{page}: found no text to check\n{report}");
        if let Some(first) = worst.first() {
            let ratio = first["ratio"].as_f64().unwrap_or(0.0);
            if ratio < min {
                let shot = self.screenshot(&format!("{page}-unreadable")).await;
                panic!(
                    "{page}: text with a contrast ratio of {ratio:.2} (< {min}) against its \
                     background; worst texts:\n{}\nscreenshot: {}",
                    serde_json::to_string_pretty(&worst).unwrap_or_default(),
                    shot.display()
                );
            }
        }
        report
    }

    /// Save a PNG of the whole page (up to 8000 CSS pixels down) as `NN-<name>.png` in the
    /// output directory; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let n = self.shots.fetch_add(1, Ordering::SeqCst) + 1;
        let path = self.out.join(format!("{n:02}-{name}.png"));
        let png = match self.full_page_png().await {
            Some(png) => png,
            None => self
                .client
                .screenshot()
                .await
                .unwrap_or_else(|e| panic!("screenshot {name}: {e}")),
        };
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// The whole page through CDP (`None` if that is not possible: the caller falls back to
    /// WebDriver's viewport screenshot).
    async fn full_page_png(&self) -> Option<Vec<u8>> {
        let metrics = self.try_cdp("Page.getLayoutMetrics", json!({})).await?;
        let size = &metrics["cssContentSize"];
        let viewport = &metrics["cssLayoutViewport"];
        let width = size["width"]
            .as_f64()?
            .max(viewport["clientWidth"].as_f64().unwrap_or(0.0));
        let height = size["height"]
            .as_f64()?
            .max(viewport["clientHeight"].as_f64().unwrap_or(0.0))
            .min(8000.0);
        let shot = self
            .try_cdp(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": { "x": 0, "y": 0, "width": width, "height": height, "scale": 1 },
                }),
            )
            .await?;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str()?)
            .ok()
    }

    /// A CDP command; `None` on any failure.
    async fn try_cdp(&self, cmd: &str, params: Value) -> Option<Value> {
        let url = format!(
            "{}/session/{}/goog/cdp/execute",
            self.driver.url, self.session
        );
        let response = driver_http()
            .post(&url)
            .json(&json!({ "cmd": cmd, "params": params }))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body: Value = response.json().await.ok()?;
        Some(body["value"].clone())
    }

    /// A screenshot named after a failed wait (best effort).
    async fn fail_shot(&self, what: &str) {
        let n = self.shots.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(png) = self.full_page_png().await {
            let path = self.out.join(format!("{n:02}-failed-{what}.png"));
            if std::fs::write(&path, png).is_ok() {
                eprintln!("screenshot of the failure: {}", path.display());
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let failed = std::thread::panicking();
        let (driver, session, out) = (
            self.driver.url.clone(),
            self.session.clone(),
            self.out.clone(),
        );
        // Drop cannot await, and the test's runtime may be unwinding: use a thread with its own
        // runtime to talk to chromedriver directly.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let http = driver_http();
                let session_url = format!("{driver}/session/{session}");
                if failed {
                    save_failure(&http, &session_url, &out).await;
                }
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), http.delete(&session_url).send())
                        .await;
            });
        })
        .join();
    }
}

/// After a failure: the page as it is (screenshot, source, console log) next to the
/// screenshots.
async fn save_failure(http: &reqwest::Client, session_url: &str, out: &Path) {
    let get = |path: &str| {
        let url = format!("{session_url}{path}");
        async move {
            let response = tokio::time::timeout(Duration::from_secs(5), http.get(&url).send())
                .await
                .ok()?
                .ok()?;
            response.json::<Value>().await.ok()
        }
    };
    if let Some(shot) = get("/screenshot").await {
        if let Some(png) = shot["value"]
            .as_str()
            .and_then(|data| base64::engine::general_purpose::STANDARD.decode(data).ok())
        {
            let _ = std::fs::write(out.join("failure.png"), png);
        }
    }
    if let Some(source) = get("/source").await {
        let _ = std::fs::write(
            out.join("failure.html"),
            source["value"].as_str().unwrap_or_default(),
        );
    }
    if let Some(url) = get("/url").await {
        let _ = std::fs::write(
            out.join("failure-url.txt"),
            url["value"].as_str().unwrap_or_default(),
        );
    }
    let log = async {
        let response = http
            .post(format!("{session_url}/se/log"))
            .json(&json!({ "type": "browser" }))
            .send()
            .await
            .ok()?;
        response.json::<Value>().await.ok()
    };
    if let Ok(Some(log)) = tokio::time::timeout(Duration::from_secs(5), log).await {
        let lines: Vec<String> = log["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| format!("{} {}", e["level"], e["message"]))
                    .collect()
            })
            .unwrap_or_default();
        if !lines.is_empty() {
            eprintln!("----- browser console -----\n{}", lines.join("\n"));
        }
        let _ = std::fs::write(out.join("failure-console.log"), lines.join("\n"));
    }
    eprintln!(
        "===== browser state at the failure saved in {} (failure.png, failure.html, \
         failure-console.log) =====",
        out.display()
    );
}

/// The first `n` characters of `text`.
fn snippet(text: &str, n: usize) -> String {
    match text.char_indices().nth(n) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Computes, for each visible element with its own text, the WCAG contrast ratio of its text
/// colour against the background it is drawn on (ancestors' backgrounds composited over the
/// canvas, which is dark when the root's `color-scheme` is dark). Colours of any syntax are
/// resolved through a 2D canvas.
const CONTRAST_JS: &str = r#"
const canvas = document.createElement('canvas');
canvas.width = canvas.height = 1;
const ctx = canvas.getContext('2d', { willReadFrequently: true });
function rgba(css) {
  ctx.clearRect(0, 0, 1, 1);
  ctx.fillStyle = 'rgba(0,0,0,0)';
  ctx.fillStyle = css;
  ctx.fillRect(0, 0, 1, 1);
  const d = ctx.getImageData(0, 0, 1, 1).data;
  return [d[0], d[1], d[2], d[3] / 255];
}
function over(top, bottom) {
  const a = top[3];
  return [0, 1, 2].map(i => top[i] * a + bottom[i] * (1 - a)).concat([1]);
}
function lum(c) {
  const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
}
function ratio(a, b) {
  const la = lum(a), lb = lum(b);
  return (Math.max(la, lb) + 0.05) / (Math.min(la, lb) + 0.05);
}
const rootScheme = getComputedStyle(document.documentElement).colorScheme || '';
const darkCanvas = rootScheme.includes('dark') &&
  (!rootScheme.includes('light') || matchMedia('(prefers-color-scheme: dark)').matches);
const canvasColour = darkCanvas ? [18, 18, 18, 1] : [255, 255, 255, 1];
function background(el) {
  const layers = [];
  for (let e = el; e; e = e.parentElement) {
    const s = getComputedStyle(e);
    if (s.backgroundImage && s.backgroundImage !== 'none') return null;
    const c = rgba(s.backgroundColor);
    if (c[3] > 0) layers.push(c);
    if (c[3] >= 1) break;
  }
  let bg = canvasColour;
  for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg);
  return bg;
}
function describe(e) {
  let d = e.tagName.toLowerCase();
  if (e.id) d += '#' + e.id;
  if (typeof e.className === 'string' && e.className.trim()) d += '.' + e.className.trim().split(/\s+/).join('.');
  return d;
}
const results = [];
for (const el of document.querySelectorAll('body, body *')) {
  if (el.closest('svg, script, style, noscript, template, option')) continue;
  const own = Array.from(el.childNodes).filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
  if (!own) continue;
  const s = getComputedStyle(el);
  if (s.visibility !== 'visible' || s.display === 'none' || parseFloat(s.opacity) === 0) continue;
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) continue;
  const bg = background(el);
  if (!bg) continue;
  const fg = over(rgba(s.color), bg);
  results.push({ element: describe(el), text: own.slice(0, 60), ratio: Math.round(ratio(fg, bg) * 100) / 100,
                 color: s.color, background: 'rgb(' + bg.slice(0, 3).map(Math.round).join(',') + ')' });
}
results.sort((a, b) => a.ratio - b.ratio);
const pageBg = background(document.body) || canvasColour;
return { checked: results.length, page_background_luminance: lum(pageBg), worst: results.slice(0, 5) };
"#;
