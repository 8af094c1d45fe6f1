//! The two ways to the hypercode runtime image give the same layout: the multi-stage
//! `Dockerfile` (BuildKit, a registry) and `scripts/images` (a binary built on the host, on a
//! local Debian base), because the second builds the first's runtime stage. This machine's
//! engine cannot run the first, so these tests check what `scripts/images` makes of it: the
//! runtime stage word for word, and a build context holding every file it copies.
//! `scripts/compose-test` builds and runs the image for real.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What `scripts/images --runtime-dockerfile` prints.
fn host_dockerfile() -> String {
    let out = Command::new("bash")
        .arg(root().join("scripts/images"))
        .arg("--runtime-dockerfile")
        .output()
        .expect("run scripts/images");
    assert!(
        out.status.success(),
        "scripts/images --runtime-dockerfile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The instructions of a Dockerfile: continuation lines joined, comments and blanks dropped,
/// whitespace collapsed.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        let (part, continued) = match line.strip_suffix('\\') {
            Some(part) => (part, true),
            None => (line, false),
        };
        current.push_str(part);
        current.push(' ');
        if !continued {
            out.push(current.split_whitespace().collect::<Vec<_>>().join(" "));
            current.clear();
        }
    }
    out
}

/// The instructions after the last `FROM` (the runtime stage).
fn runtime_stage(text: &str) -> Vec<String> {
    let all = instructions(text);
    let from = all
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .expect("a FROM instruction");
    all[from + 1..].to_vec()
}

#[test]
fn the_host_built_image_has_the_multi_stage_runtime_stage() {
    let multi_stage = runtime_stage(&read("Dockerfile"));
    let from_host = runtime_stage(&host_dockerfile());
    assert_eq!(multi_stage, from_host);
    for expected in [
        "COPY --from=builder /usr/local/bin/hypercode /usr/local/bin/hypercode",
        "USER 10001:10001",
        r#"ENTRYPOINT ["hypercode"]"#,
    ] {
        assert!(
            multi_stage.iter().any(|i| i == expected),
            "no `{expected}` in {multi_stage:?}"
        );
    }
    assert!(
        multi_stage
            .iter()
            .any(|i| i.starts_with("HEALTHCHECK ")
                && i.ends_with(r#"CMD ["hypercode", "healthcheck"]"#)),
        "the healthcheck is the binary's own: {multi_stage:?}"
    );
}

/// Every file the host's Dockerfile copies from its context is put there by scripts/images.
#[test]
fn scripts_images_puts_every_copied_file_in_the_runtime_context() {
    let script = read("scripts/images");
    let sources: Vec<String> = instructions(&host_dockerfile())
        .iter()
        .filter_map(|i| i.strip_prefix("COPY "))
        .filter(|args| !args.starts_with("--from="))
        .map(|args| {
            let words: Vec<&str> = args.split_whitespace().collect();
            words[..words.len() - 1].join(" ")
        })
        .collect();
    assert_eq!(
        sources,
        ["hypercode", "docker/runtime/setup.sh", "catalog.toml"]
    );
    for source in sources {
        assert!(
            script.contains(&format!("\"$context/{source}\"")),
            "scripts/images does not put `{source}` in the runtime image's build context"
        );
    }
}
