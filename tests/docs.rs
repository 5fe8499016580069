//! The docs cannot drift from the code: each test here reads a document and
//! checks it against the thing it describes.
//!
//! - The README's options table and the `echod(1)` man page
//!   (`contrib/man/echod.1`) list exactly the options `echod --help` lists,
//!   with the same defaults; the man page and the README's health-probe
//!   section do the same for `echod probe --help`. The help comes from
//!   running the real binary, so the help text is the one source.
//! - Every Markdown table is one block (a row after a blank line renders as
//!   a paragraph of literal pipes).
//! - Every file path and test name that README.md and docs/*.md cite exists
//!   in the tree as it is now (the tree is read, not a list of files), and
//!   every Prometheus series they name is one `tests/metrics.rs` checks.
//! - The declared `rust-version` covers every locked dependency's, read
//!   from `cargo metadata`, and the README states the same version.
//! - The README's commands run in order on a fresh clone: a binary under
//!   `target/release/` is built by an earlier command, and the chaos soak
//!   is the one `.ci/run` runs.
//!
//! Nothing here opens a socket. Matching is deliberately plain text, with
//! the rules stated on each helper, so that a failure names the line to fix.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

/// The repository's root (echod is the root package of the workspace).
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Reads a file of the repository, by its path from the root.
#[track_caller]
fn read(path: &str) -> String {
    fs::read_to_string(root().join(path)).unwrap_or_else(|err| panic!("read {path}: {err}"))
}

/// Runs the real `echod` with `args` and returns what it printed; it must
/// exit 0.
#[track_caller]
fn echod_output(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_echod"))
        .args(args)
        .output()
        .expect("run echod");
    assert!(output.status.success(), "echod {args:?} failed: {output:?}");
    String::from_utf8(output.stdout).expect("echod prints UTF-8")
}

// ---------------------------------------------------------------------------
// Options: --help against the README and the man page.

/// One option as a help text lists it.
#[derive(Debug)]
struct HelpOption {
    /// Every spelling, as `["-l", "--listen"]`; the long one is last.
    flags: Vec<String>,
    /// What `[default: ...]` says, if anything.
    default: Option<String>,
}

impl HelpOption {
    fn long(&self) -> &str {
        self.flags.last().expect("an option has a flag")
    }
}

/// The options of a help text: each entry starts on a line indented by two
/// spaces and beginning with `-`, and goes on over the more deeply indented
/// lines after it. The default is the bracketed `[default: ...]` anywhere in
/// the entry (it may hold brackets itself, as `[::1]:12321`).
fn help_options(help: &str) -> Vec<HelpOption> {
    let mut entries: Vec<String> = Vec::new();
    for line in help.lines() {
        let indent = line.len() - line.trim_start().len();
        if (2..=6).contains(&indent) && line.trim_start().starts_with('-') {
            entries.push(line.trim().to_owned());
        } else if indent > 6 && !line.trim().is_empty() {
            // Continues the entry above, if there is one (not the
            // `Usage:` line's second line).
            if let Some(entry) = entries.last_mut().filter(|entry| !entry.is_empty()) {
                entry.push(' ');
                entry.push_str(line.trim());
            }
        } else if !line.starts_with(' ') {
            // A line at the margin ends the block an entry belongs to.
            entries.push(String::new());
        }
    }
    entries
        .iter()
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let head = entry.split("  ").next().expect("split yields one part");
            let flags = head
                .split([',', ' '])
                .filter(|word| word.starts_with('-'))
                .map(str::to_owned)
                .collect();
            HelpOption {
                flags,
                default: bracketed_default(entry),
            }
        })
        .collect()
}

/// The text of `[default: ...]` in `text`, matching nested brackets.
fn bracketed_default(text: &str) -> Option<String> {
    let start = text.find("[default: ")? + "[default: ".len();
    let mut depth = 1;
    for (offset, c) in text[start..].char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(text[start..start + offset].to_owned());
                }
            }
            _ => {}
        }
    }
    panic!("unclosed [default: in {text:?}");
}

/// Text with Markdown code marks dropped, the minus sign spelt `-`, and
/// runs of white space made one space.
fn plain(text: &str) -> String {
    text.replace('`', "")
        .replace('−', "-")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `documented` states the help's `default`: it starts with the
/// default's first comma-separated part (as a whole word), and holds the
/// other parts after it, in order. So `64KiB` matches "64KiB (65536)", and
/// "127.0.0.1:12321, [::1]:12321" matches "127.0.0.1:12321 and [::1]:12321",
/// while `1` does not match "12321".
fn states_default(documented: &str, default: &str) -> bool {
    let documented = plain(documented);
    let default = plain(default);
    let mut parts = default.split(", ");
    let first = parts.next().expect("split yields one part");
    let Some(mut rest) = documented.strip_prefix(first) else {
        return false;
    };
    let mut after = rest.chars();
    let boundary = match (after.next(), after.next()) {
        (None, _) => true,
        (Some('.'), next) => !next.is_some_and(char::is_alphanumeric),
        (Some(c), _) => !c.is_alphanumeric(),
    };
    if !boundary {
        return false;
    }
    for part in parts {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The lines of the Markdown section headed `heading` (any level), up to
/// the next heading of the same or a higher level.
fn markdown_section<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    let mut lines = text.lines();
    let level = lines
        .by_ref()
        .find_map(|line| {
            let hashes = line.len() - line.trim_start_matches('#').len();
            (hashes > 0 && line[hashes..].trim() == heading).then_some(hashes)
        })
        .unwrap_or_else(|| panic!("no section headed {heading:?}"));
    lines
        .take_while(|line| {
            let hashes = line.len() - line.trim_start_matches('#').len();
            hashes == 0 || hashes > level || !line[hashes..].starts_with(' ')
        })
        .collect()
}

/// The cells of a Markdown table row, trimmed.
fn cells(row: &str) -> Vec<&str> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    // A pipe escaped as `\|` is text inside a cell, as GitHub renders it.
    let mut cells = Vec::new();
    let mut start = 0;
    let bytes = inner.as_bytes();
    for (i, &byte) in bytes.iter().enumerate() {
        if byte == b'|' && (i == 0 || bytes[i - 1] != b'\\') {
            cells.push(inner[start..i].trim());
            start = i + 1;
        }
    }
    cells.push(inner[start..].trim());
    cells
}

#[test]
fn readme_options_table_lists_every_option_of_help_with_its_default() {
    let help = help_options(&echod_output(&["--help"]));
    assert!(
        help.len() > 10,
        "--help parsed to too few options: {help:?}"
    );
    let readme = read("README.md");
    let rows: Vec<Vec<&str>> = markdown_section(&readme, "Options")
        .into_iter()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|')) // The section's first table.
        .skip(2) // The header and the delimiter row.
        .map(cells)
        .collect();

    let mut problems = Vec::new();
    for option in &help {
        let row = rows.iter().find(|row| {
            let names = plain(row[0]);
            names.split(", ").any(|name| name == option.long())
        });
        let Some(row) = row else {
            problems.push(format!("{} is in --help, not in the table", option.long()));
            continue;
        };
        if plain(row[0]).split(", ").collect::<Vec<_>>() != option.flags {
            problems.push(format!(
                "{}: the table spells it {:?}, --help {:?}",
                option.long(),
                row[0],
                option.flags
            ));
        }
        match &option.default {
            Some(default) if !states_default(row[2], default) => problems.push(format!(
                "{}: the table's default {:?} is not --help's {default:?}",
                option.long(),
                row[2]
            )),
            None if !row[2].is_empty() => problems.push(format!(
                "{}: the table gives a default ({:?}), --help none",
                option.long(),
                row[2]
            )),
            _ => {}
        }
    }
    for row in &rows {
        let names = plain(row[0]);
        if !help
            .iter()
            .any(|option| names.split(", ").any(|name| name == option.long()))
        {
            problems.push(format!("the table lists {names}, which --help does not"));
        }
    }
    assert!(
        problems.is_empty(),
        "README options table:\n{}",
        problems.join("\n")
    );
}

#[test]
fn readme_health_probe_section_names_every_probe_option_and_default() {
    let help_text = echod_output(&["probe", "--help"]);
    let section = markdown_section(&read("README.md"), "Health probe").join("\n");
    let section = plain(&section);
    for option in help_options(&help_text) {
        if option.long() == "--help" {
            continue;
        }
        assert!(
            section.contains(option.long()),
            "the README's health probe section does not name {}",
            option.long()
        );
        if let Some(default) = &option.default {
            assert!(
                section.contains(&format!("default {default}")),
                "the README's health probe section does not give {}'s default {default}",
                option.long()
            );
        }
    }
    let addr_default = bracketed_default(&plain(&help_text)).expect("ADDR has a default");
    assert!(
        section.contains(&format!("default {addr_default}")),
        "the README's health probe section does not give ADDR's default {addr_default}"
    );
}

/// A man page's text as it reads, roughly: font escapes dropped, `\-`
/// spelt `-`, and each macro line reduced to its arguments (joined without
/// spaces for the alternating-font macros `.BR`, `.BI`, `.IR`, `.RB`, with
/// spaces for `.B` and `.I`). Comments and other requests are dropped.
fn roff_text(line: &str) -> String {
    let unescaped = line
        .replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fP", "")
        .replace("\\(em", "-");
    let Some(request) = unescaped.strip_prefix('.') else {
        return unescaped;
    };
    let (name, args) = request.split_once(' ').unwrap_or((request, ""));
    let args = roff_args(args);
    match name {
        "BR" | "BI" | "IR" | "RB" | "IB" | "RI" => args.concat(),
        "B" | "I" => args.join(" "),
        _ => String::new(),
    }
}

/// A request's arguments: separated by spaces, a double-quoted argument may
/// hold spaces.
fn roff_args(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in args.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The `.TP` entries of the man page section `.SH name`: each is the tag
/// line's text and the body's text.
fn man_entries(page: &str, name: &str) -> Vec<(String, String)> {
    let mut lines = page
        .lines()
        .skip_while(|line| *line != format!(".SH {name}"));
    assert!(lines.next().is_some(), "the man page has no .SH {name}");
    let section: Vec<&str> = lines.take_while(|line| !line.starts_with(".SH")).collect();
    let mut entries = Vec::new();
    let mut at = 0;
    while at < section.len() {
        if section[at] == ".TP" && at + 1 < section.len() {
            let tag = roff_text(section[at + 1]);
            let body: Vec<String> = section[at + 2..]
                .iter()
                .take_while(|line| !matches!(**line, ".TP" | ".PP"))
                .map(|line| roff_text(line))
                .collect();
            entries.push((tag, body.join(" ")));
            at += 2;
        } else {
            at += 1;
        }
    }
    entries
}

/// The flags in a man page tag such as `-l, --listen ADDR`.
fn tag_flags(tag: &str) -> Vec<String> {
    tag.split([',', ' '])
        .filter(|word| word.starts_with('-'))
        .map(str::to_owned)
        .collect()
}

/// Checks one man page section against one help text's options.
fn check_man_section(page: &str, section: &str, help: &[HelpOption], problems: &mut Vec<String>) {
    let entries = man_entries(page, section);
    for option in help {
        let Some((tag, body)) = entries
            .iter()
            .find(|(tag, _)| tag_flags(tag).last().map(String::as_str) == Some(option.long()))
        else {
            problems.push(format!(
                "{section}: {} is in --help, not here",
                option.long()
            ));
            continue;
        };
        if tag_flags(tag) != option.flags {
            problems.push(format!(
                "{section}: {tag:?} is not spelt as --help's {:?}",
                option.flags
            ));
        }
        let documented = body.split_once("Default: ").map(|(_, rest)| rest);
        match (&option.default, documented) {
            (Some(default), Some(documented)) if states_default(documented, default) => {}
            (None, None) => {}
            (default, documented) => problems.push(format!(
                "{section}: {}: the default here is {documented:?}, in --help {default:?}",
                option.long()
            )),
        }
    }
    for (tag, _) in &entries {
        let flags = tag_flags(tag);
        if !help
            .iter()
            .any(|option| flags.last().map(String::as_str) == Some(option.long()))
        {
            problems.push(format!("{section}: {tag:?} is not an option of --help"));
        }
    }
}

#[test]
fn man_page_lists_every_option_of_help_with_its_default() {
    let page = read("contrib/man/echod.1");
    let mut problems = Vec::new();
    let daemon = help_options(&echod_output(&["--help"]));
    check_man_section(&page, "OPTIONS", &daemon, &mut problems);
    let probe_help = echod_output(&["probe", "--help"]);
    let probe = help_options(&probe_help);
    check_man_section(&page, "PROBE", &probe, &mut problems);

    let addr_default = bracketed_default(&plain(&probe_help)).expect("ADDR has a default");
    let probe_text: String = page
        .lines()
        .skip_while(|line| *line != ".SH PROBE")
        .map(roff_text)
        .collect::<Vec<_>>()
        .join(" ");
    if !probe_text.contains(&format!("Default ADDR: {addr_default}.")) {
        problems.push(format!(
            "PROBE: does not give ADDR's default {addr_default}"
        ));
    }

    let version = format!("\"echod {}\"", env!("CARGO_PKG_VERSION"));
    let title = page
        .lines()
        .find(|line| line.starts_with(".TH "))
        .expect("the man page has a .TH line");
    if !title.contains(&version) {
        problems.push(format!(".TH {title:?} does not name {version}"));
    }
    assert!(
        problems.is_empty(),
        "contrib/man/echod.1:\n{}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Markdown: tables, paths and test names.

/// README.md and every docs/*.md, by path from the root.
fn markdown_files() -> Vec<String> {
    let mut files = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = fs::read_dir(root().join("docs"))
        .expect("read docs/")
        .map(|entry| entry.expect("read a docs/ entry").file_name())
        .filter_map(|name| name.to_str().map(str::to_owned))
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The lines of a Markdown text outside fenced code blocks, with their
/// line numbers (from 1).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((idx + 1, line));
        }
    }
    out
}

/// Whether a line is a table's delimiter row, as `|---|:--:|`.
fn is_delimiter_row(line: &str) -> bool {
    let cells = cells(line);
    !cells.is_empty()
        && cells.iter().all(|cell| {
            let cell = cell.trim_matches(':');
            !cell.is_empty() && cell.chars().all(|c| c == '-')
        })
}

#[test]
fn every_markdown_table_is_one_block() {
    let mut problems = Vec::new();
    for file in markdown_files() {
        let text = read(&file);
        let lines = prose_lines(&text);
        let mut at = 0;
        while at < lines.len() {
            if !lines[at].1.starts_with('|') {
                at += 1;
                continue;
            }
            // A run of consecutive `|` lines: one table, header first.
            let mut end = at;
            while end < lines.len()
                && lines[end].1.starts_with('|')
                && lines[end].0 == lines[at].0 + (end - at)
            {
                end += 1;
            }
            let run = &lines[at..end];
            let (first_line, header) = run[0];
            if run.len() < 2 || !is_delimiter_row(run[1].1) {
                problems.push(format!(
                    "{file}:{first_line}: table rows with no header and delimiter row above them \
                     (a blank line or paragraph inside a table?)"
                ));
            } else {
                let columns = cells(header).len();
                for (line_no, row) in run {
                    if cells(row).len() != columns {
                        problems.push(format!(
                            "{file}:{line_no}: {} cells where the header has {columns}",
                            cells(row).len()
                        ));
                    }
                }
            }
            at = end;
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every file and directory of the tree, by path from the root, with
/// directories ending in `/`. Build output (`target/`), version control and
/// what fuzzing writes (`fuzz/out/`, `fuzz/target/`) are left out.
fn tree() -> BTreeSet<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
        for entry in fs::read_dir(dir).expect("read a directory of the tree") {
            let entry = entry.expect("read a directory entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = format!("{prefix}{name}");
            if matches!(
                path.as_str(),
                "target" | ".git" | "fuzz/out" | "fuzz/target"
            ) {
                continue;
            }
            if entry.file_type().expect("read an entry's type").is_dir() {
                out.insert(format!("{path}/"));
                walk(&entry.path(), &format!("{path}/"), out);
            } else {
                out.insert(path);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root(), "", &mut out);
    out
}

/// The inline code spans of a Markdown line, outside fenced blocks.
fn code_spans(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// Extensions that mark a code span as a file name.
const FILE_EXTENSIONS: [&str; 12] = [
    ".rs", ".md", ".toml", ".sh", ".cfg", ".service", ".socket", ".lock", ".json", ".svg", ".py",
    ".1",
];

/// Whether a code span names a file or directory of the tree: one word,
/// with a `/` or a file extension, not absolute (`/proc/PID` is the
/// system's, `~/.cargo/bin` the user's), not a bare extension (`.socket`), and not build output
/// (`target/...`), which a fresh clone does not have yet, or what
/// `fuzz/run.sh` writes (`fuzz/out/`).
fn cited_path(span: &str) -> Option<&str> {
    let is_word = !span.is_empty() && !span.contains(char::is_whitespace);
    let looks_like_path =
        span.contains('/') || FILE_EXTENSIONS.iter().any(|ext| span.ends_with(ext));
    let excluded = span.starts_with('/')
        || span.starts_with('~')
        || span.starts_with('$')
        || span.contains("://")
        || (span.starts_with('.') && !span.contains('/'))
        || span.starts_with("target/")
        || span.starts_with("fuzz/out/");
    (is_word && looks_like_path && !excluded).then_some(span)
}

/// Resolves a cited path: from the root, or from the citing document's
/// directory (`PROTOCOL.md` in docs/); a bare file name may be anywhere in
/// the tree (`connection.rs` in a code map). Returns the path from the root.
fn resolve(tree: &BTreeSet<String>, doc: &str, cited: &str) -> Option<String> {
    let doc_dir = doc.rsplit_once('/').map_or("", |(dir, _)| dir);
    let candidates = [cited.to_owned(), format!("{doc_dir}/{cited}")];
    for candidate in candidates {
        let as_dir = format!("{}/", candidate.trim_end_matches('/'));
        if tree.contains(candidate.trim_end_matches('/')) {
            return Some(candidate.trim_end_matches('/').to_owned());
        }
        if tree.contains(&as_dir) {
            return Some(as_dir);
        }
    }
    if !cited.contains('/') {
        return tree
            .iter()
            .find(|path| path.rsplit('/').next() == Some(cited))
            .cloned();
    }
    None
}

/// The name of the Prometheus series a code span names, labels dropped
/// (`echod_connections_closed_total{reason}`), if it names one: it begins
/// with `echod_` or `process_` and is lower-case snake case.
fn series_name(span: &str) -> Option<&str> {
    let name = span.split_once('{').map_or(span, |(name, _)| name);
    let snake = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    (snake && (name.starts_with("echod_") || name.starts_with("process_"))).then_some(name)
}

/// Whether a code span has the shape of a test name: lower-case snake case
/// of four words or more (`second_signal_exits_at_once`), which field and
/// JSON key names (`max_line_bytes`, `lines_all_phases`) are not.
fn is_test_name(span: &str) -> bool {
    span.chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && span.starts_with(|c: char| c.is_ascii_lowercase())
        && span.matches('_').count() >= 3
}

/// Whether `fn name` is defined in the file at `path`, or in the files of
/// its module directory (`tests/sim/` for `tests/simulation.rs` is not
/// one; `src/server/` for `src/server.rs` is).
fn defines_fn(tree: &BTreeSet<String>, path: &str, name: &str) -> bool {
    let module_dir = format!("{}/", path.trim_end_matches(".rs"));
    tree.iter()
        .filter(|file| file.ends_with(".rs") && (*file == path || file.starts_with(&module_dir)))
        .any(|file| defines_fn_in(&read(file), name))
}

/// Whether `text` defines `fn name`.
fn defines_fn_in(text: &str, name: &str) -> bool {
    let pattern = format!("fn {name}");
    text.match_indices(&pattern).any(|(at, _)| {
        !text[at + pattern.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
    })
}

#[test]
fn every_path_and_test_name_the_docs_cite_exists() {
    let tree = tree();
    let rust_files: Vec<&String> = tree.iter().filter(|path| path.ends_with(".rs")).collect();
    let mut problems = Vec::new();
    for doc in markdown_files() {
        let text = read(&doc);
        // The file a test name belongs to is the last `.rs` file cited
        // before it in the same paragraph (or table row).
        let mut current_file: Option<String> = None;
        for (line_no, line) in prose_lines(&text) {
            if line.trim().is_empty() || line.starts_with('|') {
                current_file = None;
            }
            for span in code_spans(line) {
                if let Some(cited) = cited_path(span) {
                    match resolve(&tree, &doc, cited) {
                        Some(path) => {
                            if path.ends_with(".rs") {
                                current_file = Some(path);
                            }
                        }
                        None => {
                            problems.push(format!("{doc}:{line_no}: `{cited}` does not exist"));
                            // Test names after it belong to it, not to
                            // the file cited before.
                            if cited.ends_with(".rs") {
                                current_file = Some(cited.to_owned());
                            }
                        }
                    }
                } else if let Some(series) = series_name(span) {
                    // A series the docs name is one the metrics tests
                    // find in a scrape.
                    if !read("tests/metrics.rs").contains(&format!("\"{series}")) {
                        problems.push(format!(
                            "{doc}:{line_no}: series `{series}` is not checked in tests/metrics.rs"
                        ));
                    }
                } else if is_test_name(span) {
                    let found = match &current_file {
                        Some(file) => defines_fn(&tree, file, span),
                        None => rust_files
                            .iter()
                            .any(|file| defines_fn_in(&read(file), span)),
                    };
                    if !found {
                        let place = current_file.as_deref().unwrap_or("any .rs file");
                        problems.push(format!("{doc}:{line_no}: `{span}` is not a fn in {place}"));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------
// The README's commands.

/// The commands (after `$ `) of the README's `console` blocks, in order.
fn readme_commands() -> Vec<String> {
    let readme = read("README.md");
    let mut fenced = false;
    let mut commands = Vec::new();
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if fenced {
            if let Some(command) = line.strip_prefix("$ ") {
                commands.push(command.trim().to_owned());
            }
        }
    }
    commands
}

#[test]
fn readme_runs_a_release_binary_only_after_a_command_that_builds_it() {
    let mut built: BTreeSet<String> = BTreeSet::new();
    for command in readme_commands() {
        for word in command.split_whitespace() {
            let Some(binary) = word
                .strip_prefix("./target/release/")
                .or_else(|| word.strip_prefix("target/release/"))
            else {
                continue;
            };
            assert!(
                built.contains(binary),
                "the README runs {word} ({command:?}) before any command builds it"
            );
        }
        if command.starts_with("cargo run --release") && !command.contains(" -p ") {
            built.insert("echod".to_owned());
        }
        if command.starts_with("cargo build --release") && command.contains("--workspace") {
            built.extend(["echod", "echo-bench", "echo-chaos"].map(str::to_owned));
        }
        if let Some(rest) = command.strip_prefix("cargo build --release -p ") {
            built.insert(rest.split_whitespace().next().unwrap_or("").to_owned());
        }
    }
}

#[test]
fn readme_chaos_soak_is_the_one_ci_runs() {
    let ci = read(".ci/run");
    let soaks: Vec<String> = readme_commands()
        .into_iter()
        .filter(|command| command.contains("echo-chaos --duration 20 "))
        .collect();
    assert!(
        !soaks.is_empty(),
        "the README shows no 20-second chaos soak"
    );
    for soak in soaks {
        assert!(
            ci.lines().any(|line| line.trim() == soak),
            "the README's chaos soak {soak:?} is not a line of .ci/run"
        );
    }
}

// ---------------------------------------------------------------------------
// rust-version.

/// A `rust-version` as (major, minor, patch); a missing part is 0.
fn parse_rust_version(text: &str) -> (u64, u64, u64) {
    let mut parts = text.split('.').map(|part| {
        part.parse::<u64>()
            .unwrap_or_else(|_| panic!("rust-version {text:?} is not numeric"))
    });
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[test]
fn rust_version_covers_every_locked_dependency() {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
        ])
        .arg(root().join("Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "cargo metadata failed: {output:?}");
    let metadata = String::from_utf8(output.stdout).expect("cargo metadata prints UTF-8");
    let metadata = json::parse(&metadata);
    let packages = metadata
        .get("packages")
        .expect("metadata lists packages")
        .array();
    let workspace: Vec<&str> = metadata
        .get("workspace_members")
        .expect("metadata lists the workspace members")
        .array()
        .iter()
        .map(json::Value::str)
        .collect();

    let declared = env!("CARGO_PKG_RUST_VERSION");
    let floor = parse_rust_version(declared);
    let mut needs_more = Vec::new();
    for package in packages {
        let name = package.get("name").expect("a package has a name").str();
        let version = package
            .get("version")
            .expect("a package has a version")
            .str();
        let id = package.get("id").expect("a package has an id").str();
        let rust_version = package.get("rust_version").and_then(json::Value::opt_str);
        if workspace.contains(&id) {
            assert_eq!(
                rust_version,
                Some(declared),
                "{name} has its own rust-version"
            );
        } else if let Some(needed) = rust_version {
            // No let chains: they need Rust 1.88, and this file builds on
            // the declared rust-version too.
            if parse_rust_version(needed) > floor {
                needs_more.push(format!("{name} {version} needs {needed}"));
            }
        }
    }
    assert!(
        needs_more.is_empty(),
        "rust-version {declared} is false: {}",
        needs_more.join(", ")
    );

    let readme = read("README.md");
    let stated = format!("Rust {declared} or later");
    assert!(
        readme.contains(&stated),
        "the README does not say {stated:?}"
    );
}

/// Just enough JSON to read `cargo metadata`: a recursive-descent reader
/// of one value, which panics on input that is not JSON.
mod json {
    /// A JSON value; what nothing here reads (booleans, numbers) is not kept.
    #[derive(Debug)]
    pub enum Value {
        Null,
        Bool,
        Number,
        String(String),
        Array(Vec<Value>),
        Object(Vec<(String, Value)>),
    }

    impl Value {
        /// The member `key` of an object.
        pub fn get(&self, key: &str) -> Option<&Value> {
            match self {
                Value::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
        }

        /// The elements of an array.
        #[track_caller]
        pub fn array(&self) -> &[Value] {
            match self {
                Value::Array(elements) => elements,
                other => panic!("expected an array, found {other:?}"),
            }
        }

        /// A string's text.
        #[track_caller]
        pub fn str(&self) -> &str {
            self.opt_str()
                .unwrap_or_else(|| panic!("expected a string, found {self:?}"))
        }

        /// A string's text, or `None` for anything else (such as `null`).
        pub fn opt_str(&self) -> Option<&str> {
            match self {
                Value::String(text) => Some(text),
                _ => None,
            }
        }
    }

    /// Parses a whole JSON document.
    pub fn parse(text: &str) -> Value {
        let mut reader = Reader {
            bytes: text.as_bytes(),
            at: 0,
        };
        let value = reader.value();
        reader.skip_space();
        assert_eq!(
            reader.at,
            reader.bytes.len(),
            "trailing bytes after the JSON value"
        );
        value
    }

    struct Reader<'a> {
        bytes: &'a [u8],
        /// The next byte to read.
        at: usize,
    }

    impl Reader<'_> {
        fn skip_space(&mut self) {
            while self.bytes.get(self.at).is_some_and(u8::is_ascii_whitespace) {
                self.at += 1;
            }
        }

        #[track_caller]
        fn expect(&mut self, byte: u8) {
            self.skip_space();
            assert_eq!(self.bytes.get(self.at), Some(&byte), "at byte {}", self.at);
            self.at += 1;
        }

        fn value(&mut self) -> Value {
            self.skip_space();
            match self.bytes[self.at] {
                b'{' => {
                    self.at += 1;
                    let mut members = Vec::new();
                    self.skip_space();
                    if self.bytes[self.at] == b'}' {
                        self.at += 1;
                        return Value::Object(members);
                    }
                    loop {
                        self.skip_space();
                        let key = self.string();
                        self.expect(b':');
                        members.push((key, self.value()));
                        self.skip_space();
                        self.at += 1;
                        match self.bytes[self.at - 1] {
                            b',' => continue,
                            b'}' => return Value::Object(members),
                            other => panic!("unexpected {:?} in an object", other as char),
                        }
                    }
                }
                b'[' => {
                    self.at += 1;
                    let mut elements = Vec::new();
                    self.skip_space();
                    if self.bytes[self.at] == b']' {
                        self.at += 1;
                        return Value::Array(elements);
                    }
                    loop {
                        elements.push(self.value());
                        self.skip_space();
                        self.at += 1;
                        match self.bytes[self.at - 1] {
                            b',' => continue,
                            b']' => return Value::Array(elements),
                            other => panic!("unexpected {:?} in an array", other as char),
                        }
                    }
                }
                b'"' => Value::String(self.string()),
                b't' => self.word("true", Value::Bool),
                b'f' => self.word("false", Value::Bool),
                b'n' => self.word("null", Value::Null),
                _ => {
                    let start = self.at;
                    while self
                        .bytes
                        .get(self.at)
                        .is_some_and(|b| b.is_ascii_digit() || b"+-.eE".contains(b))
                    {
                        self.at += 1;
                    }
                    assert!(self.at > start, "unexpected byte at {start}");
                    Value::Number
                }
            }
        }

        fn word(&mut self, word: &str, value: Value) -> Value {
            assert!(
                self.bytes[self.at..].starts_with(word.as_bytes()),
                "at byte {}",
                self.at
            );
            self.at += word.len();
            value
        }

        /// A string, its escapes decoded (`\uXXXX` outside the BMP is kept
        /// as two replacement characters: nothing here compares them).
        fn string(&mut self) -> String {
            self.expect(b'"');
            let mut out = Vec::new();
            loop {
                let byte = self.bytes[self.at];
                self.at += 1;
                match byte {
                    b'"' => break,
                    b'\\' => {
                        let escape = self.bytes[self.at];
                        self.at += 1;
                        match escape {
                            b'n' => out.push(b'\n'),
                            b't' => out.push(b'\t'),
                            b'r' => out.push(b'\r'),
                            b'b' => out.push(8),
                            b'f' => out.push(12),
                            b'u' => {
                                let hex = std::str::from_utf8(&self.bytes[self.at..self.at + 4])
                                    .expect("\\u is followed by four hex digits");
                                self.at += 4;
                                let code = u32::from_str_radix(hex, 16).expect("hex digits");
                                let c = char::from_u32(code).unwrap_or('\u{fffd}');
                                out.extend_from_slice(c.to_string().as_bytes());
                            }
                            other => out.push(other),
                        }
                    }
                    other => out.push(other),
                }
            }
            String::from_utf8(out).expect("JSON strings are UTF-8")
        }
    }
}
