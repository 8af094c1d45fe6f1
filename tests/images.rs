//! The two ways to the hypercode runtime image give the same layout: the multi-stage
//! `Dockerfile` (BuildKit, a registry) and `scripts/images` (a binary built on the host, put on
//! a local Debian base by `docker/runtime/Dockerfile`). This machine's engine cannot build the
//! first, so their runtime stages are compared instruction by instruction: the same files at
//! the same places, the same user, environment, port, healthcheck and entry point. A `COPY`
//! counts by its destination, since the sources differ by design (the builder stage, the
//! build context). `scripts/compose-test` runs the second image for real.

use std::path::Path;

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
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

/// The instructions after the last `FROM` (the runtime stage), a `COPY` reduced to its
/// destination.
fn runtime_stage(text: &str) -> Vec<String> {
    let all = instructions(text);
    let from = all
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .expect("a FROM instruction");
    all[from + 1..]
        .iter()
        .map(|i| match i.strip_prefix("COPY ") {
            Some(args) => format!(
                "COPY -> {}",
                args.split_whitespace().last().unwrap_or_default()
            ),
            None => i.clone(),
        })
        .collect()
}

/// The sources of the `COPY` instructions after the last `FROM`.
fn copied_sources(text: &str) -> Vec<String> {
    let all = instructions(text);
    let from = all
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .unwrap_or(0);
    all[from + 1..]
        .iter()
        .filter_map(|i| i.strip_prefix("COPY "))
        .map(|args| {
            let words: Vec<&str> = args.split_whitespace().collect();
            words[..words.len().saturating_sub(1)].join(" ")
        })
        .collect()
}

#[test]
fn both_runtime_images_have_the_same_layout() {
    let multi_stage = runtime_stage(&read("Dockerfile"));
    let from_host = runtime_stage(&read("docker/runtime/Dockerfile"));
    assert_eq!(
        multi_stage, from_host,
        "the runtime stage of Dockerfile and docker/runtime/Dockerfile differ"
    );
    for expected in [
        "COPY -> /usr/local/bin/hypercode",
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

/// Everything docker/runtime/Dockerfile copies is put in its build context by scripts/images.
#[test]
fn scripts_images_puts_every_copied_file_in_the_runtime_context() {
    let script = read("scripts/images");
    for source in copied_sources(&read("docker/runtime/Dockerfile")) {
        let from_recipe = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docker/runtime")
            .join(&source)
            .exists()
            && script.contains(&format!("docker/runtime/{source}"));
        let into_context = script.contains(&format!("\"$context/{source}\""));
        assert!(
            from_recipe || into_context,
            "scripts/images does not put `{source}` in the runtime image's build context"
        );
    }
}
