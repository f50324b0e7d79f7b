//! The operator's module shape, checked on every `cargo test` so it cannot rot unnoticed:
//! every import into the crate points to a module on a strictly lower row of [`LAYERS`]
//! (which also rules out cycles), no file under `src/` runs over 400 lines and no function
//! over 60, unless a `size:` comment says why. It reads `src/` as text with a small
//! scanner (strings, chars and comments skipped); it starts nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The operator's modules, top row first. A module path is the file's path under `src/`
/// without `.rs`, `x/mod.rs` being `x`. A module may import only from rows below its own,
/// and a parent (`mod x;`) sits above its children. Messages number the rows from 0.
const LAYERS: &[&[&str]] = &[
    &["main", "bin/crdgen"],
    &["lib"],
    &["controller"],
    &["controller/sets"],
    &[
        "controller/leader",
        "controller/streams",
        "controller/tasks",
    ],
    &["reconcile", "sets"],
    &["sets/children"],
    &["sets/report"],
    &["sets/naming", "sets/context"],
    &["reconcile/apply", "reconcile/cleanup"],
    &["reconcile/act", "reconcile/record"],
    &["reconcile/plan"],
    &["reconcile/pending"],
    &["reconcile/step"],
    &["reconcile/gather", "reconcile/decide", "reconcile/retry"],
    &["reconcile/identity"],
    &["context", "drift", "server", "telemetry", "watch"],
    &["credentials"],
    &["claims", "index", "memory"],
    &["claims/claimant", "claims/target"],
    &["config", "prune", "secrets"],
    &["error", "status"],
    &["baseten"],
    &["baseten/client"],
    &["baseten/limiter", "baseten/names", "baseten/teams"],
    &["baseten/error"],
    &["crd_set", "digests"],
    &[
        "crd", "duration", "hash", "maps", "metrics", "process", "selector",
    ],
];

/// Upward imports `(from, to)` tolerated, as warnings, while a reshape is under way: empty,
/// and meant to stay so. An entry that no longer applies fails the test.
const KNOWN_UPWARD: &[(&str, &str)] = &[];

/// Oversize items `(module, function)` tolerated, as warnings, while a reshape is under way
/// (`""` for the whole file): empty, and meant to stay so. An entry that no longer applies
/// fails the test.
const KNOWN_OVERSIZE: &[(&str, &str)] = &[];

/// Longest file, in lines, without a `size:` comment in its first 5 lines.
const MAX_FILE_LINES: usize = 400;
/// Longest function, `fn` line to closing brace, without a `size:` comment just above it.
const MAX_FN_LINES: usize = 60;
/// How the binaries (`src/main.rs`, `src/bin/*.rs`) name the library.
const CRATE_NAME: &str = "baseten_secrets_operator";

// ---------------------------------------------------------------------------------------
// Scanner: tokens and comments, with strings, chars and lifetimes told apart.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ident,
    Punct,
    /// A string or char literal, or a lifetime; its text is left empty.
    Literal,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    text: String,
    line: usize,
}

#[derive(Debug, Clone)]
struct Comment {
    first: usize,
    last: usize,
    text: String,
}

#[derive(Debug, Default)]
struct Scan {
    tokens: Vec<Token>,
    comments: Vec<Comment>,
}

struct Lexer {
    chars: Vec<char>,
    at: usize,
    line: usize,
    out: Scan,
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.at + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.at += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn push(&mut self, kind: Kind, text: String, line: usize) {
        self.out.tokens.push(Token { kind, text, line });
    }

    /// Reads one token or comment; always consumes at least one character.
    fn step(&mut self) {
        let line = self.line;
        if let Some((opening, hashes)) = self.raw_string_start() {
            return self.raw_string(opening, hashes);
        }
        let Some(c) = self.peek(0) else { return };
        match (c, self.peek(1)) {
            (c, _) if c.is_whitespace() => {
                self.bump();
            }
            ('/', Some('/')) => self.line_comment(),
            ('/', Some('*')) => self.block_comment(),
            ('"', _) => self.string(),
            ('\'', _) => self.quote(),
            ('b', Some('\'')) | ('b' | 'c', Some('"')) => {
                self.bump();
                self.step();
            }
            (':', Some(':')) => {
                self.bump();
                self.bump();
                self.push(Kind::Punct, "::".into(), line);
            }
            (c, _) if is_ident_char(c) => self.ident(),
            (c, _) => {
                self.bump();
                self.push(Kind::Punct, c.to_string(), line);
            }
        }
    }

    /// `r"`, `r#"`, `br##"`, `cr"`: the opening's length and its number of `#`.
    fn raw_string_start(&self) -> Option<(usize, usize)> {
        let mut n = usize::from(matches!(self.peek(0), Some('b' | 'c')));
        if self.peek(n) != Some('r') {
            return None;
        }
        n += 1;
        let mut hashes = 0;
        while self.peek(n + hashes) == Some('#') {
            hashes += 1;
        }
        (self.peek(n + hashes) == Some('"')).then_some((n + hashes + 1, hashes))
    }

    fn raw_string(&mut self, opening: usize, hashes: usize) {
        let line = self.line;
        for _ in 0..opening {
            self.bump();
        }
        while let Some(c) = self.bump() {
            if c == '"' && (0..hashes).all(|k| self.peek(k) == Some('#')) {
                for _ in 0..hashes {
                    self.bump();
                }
                break;
            }
        }
        self.push(Kind::Literal, String::new(), line);
    }

    fn string(&mut self) {
        let line = self.line;
        self.bump();
        while let Some(c) = self.bump() {
            match c {
                '\\' => {
                    self.bump();
                }
                '"' => break,
                _ => {}
            }
        }
        self.push(Kind::Literal, String::new(), line);
    }

    /// A char literal (`'x'`, `'\''`, `'\u{7b}'`) or a lifetime or label (`'a`), which has
    /// no closing quote.
    fn quote(&mut self) {
        let line = self.line;
        let is_char = self.peek(1) == Some('\\') || self.peek(2) == Some('\'');
        self.bump();
        if is_char {
            if self.bump() == Some('\\') {
                self.bump();
            }
            while let Some(c) = self.bump() {
                if c == '\'' {
                    break;
                }
            }
        } else {
            while self.peek(0).is_some_and(is_ident_char) {
                self.bump();
            }
        }
        self.push(Kind::Literal, String::new(), line);
    }

    fn ident(&mut self) {
        let line = self.line;
        if self.peek(0) == Some('r') && self.peek(1) == Some('#') {
            self.bump();
            self.bump();
        }
        let mut text = String::new();
        while let Some(c) = self.peek(0).filter(|&c| is_ident_char(c)) {
            text.push(c);
            self.bump();
        }
        self.push(Kind::Ident, text, line);
    }

    fn line_comment(&mut self) {
        let line = self.line;
        let mut text = String::new();
        while let Some(c) = self.peek(0).filter(|&c| c != '\n') {
            text.push(c);
            self.bump();
        }
        self.out.comments.push(Comment {
            first: line,
            last: line,
            text,
        });
    }

    /// Block comments nest in Rust.
    fn block_comment(&mut self) {
        let first = self.line;
        let mut text = String::new();
        let mut depth = 0usize;
        while let Some(c) = self.bump() {
            text.push(c);
            if c == '/' && self.peek(0) == Some('*') {
                depth += 1;
                text.push('*');
                self.bump();
            } else if c == '*' && self.peek(0) == Some('/') {
                depth = depth.saturating_sub(1);
                text.push('/');
                self.bump();
                if depth == 0 {
                    break;
                }
            }
        }
        let last = self.line;
        self.out.comments.push(Comment { first, last, text });
    }
}

fn scan(source: &str) -> Scan {
    let mut lexer = Lexer {
        chars: source.chars().collect(),
        at: 0,
        line: 1,
        out: Scan::default(),
    };
    while lexer.at < lexer.chars.len() {
        lexer.step();
    }
    lexer.out
}

fn is(token: Option<&Token>, punct: &str) -> bool {
    token.is_some_and(|t| t.kind == Kind::Punct && t.text == punct)
}

fn ident(token: Option<&Token>) -> Option<&str> {
    token
        .filter(|t| t.kind == Kind::Ident)
        .map(|t| t.text.as_str())
}

// ---------------------------------------------------------------------------------------
// What one file says: its imports, child modules and functions.

/// Where a file sits in the crates.
#[derive(Debug, Clone)]
struct Unit {
    /// The module path, as in [`LAYERS`].
    module: String,
    /// A binary's root: it sees the library only by [`CRATE_NAME`].
    binary: bool,
}

impl Unit {
    fn new(module: &str, binary: bool) -> Self {
        Self {
            module: module.into(),
            binary,
        }
    }

    /// The library module path as segments; the root and binaries have none.
    fn segments(&self) -> Vec<String> {
        if self.binary || self.module == "lib" {
            return Vec::new();
        }
        self.module.split('/').map(String::from).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Import {
    line: usize,
    /// The deepest module that exists as a file, `lib` for the crate root.
    target: String,
}

#[derive(Debug, Clone)]
struct FnSpan {
    name: String,
    line: usize,
    lines: usize,
    justified: bool,
}

#[derive(Debug, Default)]
struct Facts {
    imports: Vec<Import>,
    /// `mod x;` declarations: (line, child module path).
    mods: Vec<(usize, String)>,
    fns: Vec<FnSpan>,
    lines: usize,
    file_justified: bool,
}

/// A `size:` note followed by a reason; `max_size:` or a bare `size:` is not one.
fn has_size_reason(text: &str) -> bool {
    text.match_indices("size:").any(|(at, _)| {
        let word_start = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !is_ident_char(c));
        word_start && text[at + 5..].chars().any(char::is_alphanumeric)
    })
}

fn analyze(source: &str, unit: &Unit, modules: &BTreeSet<String>) -> Facts {
    let scan = scan(source);
    let mut walk = Walk::new(&scan, unit, modules);
    walk.run();
    let mut facts = walk.facts;
    facts.lines = source.lines().count();
    facts.file_justified = scan
        .comments
        .iter()
        .any(|c| c.first <= 5 && has_size_reason(&c.text));
    facts
}

/// One pass over a file's tokens, tracking inline `mod x { ... }` blocks so that `super`
/// resolves from where it is written.
struct Walk<'a> {
    scan: &'a Scan,
    unit: &'a Unit,
    modules: &'a BTreeSet<String>,
    /// Modules this file declares with `mod x;`: a `use x::...` names one of them.
    children: BTreeSet<String>,
    /// Lines holding a token, and lines inside a comment.
    token_lines: BTreeSet<usize>,
    comment_lines: BTreeSet<usize>,
    /// Open inline modules with the brace depth of their `{`.
    inline: Vec<(String, usize)>,
    facts: Facts,
}

impl<'a> Walk<'a> {
    fn new(scan: &'a Scan, unit: &'a Unit, modules: &'a BTreeSet<String>) -> Self {
        let toks = &scan.tokens;
        let children = (0..toks.len())
            .filter(|&k| ident(toks.get(k)) == Some("mod") && is(toks.get(k + 2), ";"))
            .filter_map(|k| ident(toks.get(k + 1)).map(String::from))
            .collect();
        Self {
            scan,
            unit,
            modules,
            children,
            token_lines: toks.iter().map(|t| t.line).collect(),
            comment_lines: scan
                .comments
                .iter()
                .flat_map(|c| c.first..=c.last)
                .collect(),
            inline: Vec::new(),
            facts: Facts::default(),
        }
    }

    fn run(&mut self) {
        let scan = self.scan;
        let toks = &scan.tokens;
        let (mut depth, mut k) = (0usize, 0usize);
        let mut pending_mod = None;
        while let Some(t) = toks.get(k) {
            match (t.kind, t.text.as_str()) {
                (Kind::Punct, "{") => {
                    depth += 1;
                    if let Some(name) = pending_mod.take() {
                        self.inline.push((name, depth));
                    }
                }
                (Kind::Punct, "}") => {
                    if self.inline.last().is_some_and(|(_, d)| *d == depth) {
                        self.inline.pop();
                    }
                    depth = depth.saturating_sub(1);
                }
                (Kind::Ident, "mod") => pending_mod = self.module_item(k),
                (Kind::Ident, "use") => {
                    k = self.use_item(k);
                    continue;
                }
                (Kind::Ident, "fn") => {
                    if let Some(span) = self.fn_span(k) {
                        self.facts.fns.push(span);
                    }
                }
                (Kind::Ident, _) => {
                    if let Some(path) = inline_path(toks, k) {
                        self.import(&path, t.line, false);
                    }
                }
                _ => {}
            }
            k += 1;
        }
    }

    /// The module path `super` and `self` resolve from here.
    fn here(&self) -> Vec<String> {
        let mut here = self.unit.segments();
        here.extend(self.inline.iter().map(|(name, _)| name.clone()));
        here
    }

    /// Records `mod x;`; returns the name of an inline `mod x {` about to open.
    fn module_item(&mut self, k: usize) -> Option<String> {
        let scan = self.scan;
        let toks = &scan.tokens;
        let name = ident(toks.get(k + 1))?.to_string();
        if is(toks.get(k + 2), "{") {
            return Some(name);
        }
        if is(toks.get(k + 2), ";") && !self.unit.binary {
            let mut child = self.here();
            child.push(name);
            self.facts.mods.push((toks[k].line, child.join("/")));
        }
        None
    }

    /// Records every leaf of a `use` tree; returns the index after its `;`.
    fn use_item(&mut self, k: usize) -> usize {
        let scan = self.scan;
        let toks = &scan.tokens;
        let mut at = k + 1;
        // `use ::x` names an external crate, which the tree below cannot resolve anyway.
        if is(toks.get(at), "::") {
            at += 1;
        }
        let mut leaves = Vec::new();
        use_tree(toks, &mut at, &[], &mut leaves);
        for (path, line) in leaves {
            self.import(&path, line, true);
        }
        while toks.get(at).is_some_and(|t| !is(Some(t), ";")) {
            at += 1;
        }
        at + 1
    }

    fn import(&mut self, path: &[String], line: usize, in_use: bool) {
        let here = self.here();
        // Only a file-level `use` sees this file's `mod x;` children by their bare names.
        let children = in_use && self.inline.is_empty();
        let Some(logical) = self.logical(path, &here, children) else {
            return;
        };
        let target = deepest(&logical, self.modules);
        if target != self.unit.module {
            self.facts.imports.push(Import { line, target });
        }
    }

    /// The full module path a path names, or `None` when it leaves the library.
    fn logical(&self, path: &[String], here: &[String], children: bool) -> Option<Vec<String>> {
        let (head, rest) = path.split_first()?;
        let mut logical = match head.as_str() {
            CRATE_NAME => Vec::new(),
            // A binary's `crate`, `self` and `super` are its own crate, not the library.
            _ if self.unit.binary => return None,
            "crate" => Vec::new(),
            "self" | "super" => here.to_vec(),
            _ if children && self.children.contains(head) => {
                [here, std::slice::from_ref(head)].concat()
            }
            _ => return None,
        };
        if head == "super" {
            logical.pop()?;
        }
        for segment in rest {
            match segment.as_str() {
                "super" => {
                    logical.pop()?;
                }
                "self" => {}
                _ => logical.push(segment.clone()),
            }
        }
        Some(logical)
    }

    fn fn_span(&self, k: usize) -> Option<FnSpan> {
        let scan = self.scan;
        let toks = &scan.tokens;
        let name = ident(toks.get(k + 1))?.to_string();
        let open = body_start(toks, k + 2)?;
        let close = matching_close(toks, open)?;
        let line = toks[k].line;
        let start = self.item_start(k);
        // The note may sit up to 3 lines above the item, or among its attributes and docs.
        let (low, high) = (start.saturating_sub(3), line);
        let justified = self
            .scan
            .comments
            .iter()
            .any(|c| c.first <= high && c.last >= low && has_size_reason(&c.text));
        Some(FnSpan {
            name,
            line,
            lines: toks[close].line - line + 1,
            justified,
        })
    }

    /// The first line of the item whose `fn` is at `k`: its qualifiers, attributes, and the
    /// comments directly above them.
    fn item_start(&self, k: usize) -> usize {
        let scan = self.scan;
        let toks = &scan.tokens;
        let mut start = k;
        while let Some(prev) = start.checked_sub(1) {
            let t = &toks[prev];
            let qualifier = ["pub", "async", "const", "unsafe", "extern", "default"];
            if ident(Some(t)).is_some_and(|w| qualifier.contains(&w)) || t.kind == Kind::Literal {
                start = prev;
            } else if let Some(open) = opening(toks, prev, "(", ")")
                && ident(toks.get(open.wrapping_sub(1))) == Some("pub")
            {
                start = open - 1;
            } else if let Some(open) = opening(toks, prev, "[", "]")
                && is(toks.get(open.wrapping_sub(1)), "#")
            {
                start = open - 1;
            } else {
                break;
            }
        }
        let mut line = toks[start].line;
        while self.comment_lines.contains(&(line - 1)) && !self.token_lines.contains(&(line - 1)) {
            line -= 1;
        }
        line
    }
}

/// Reads one `use` tree at `at`, pushing each leaf path with the line of its last segment.
fn use_tree(
    toks: &[Token],
    at: &mut usize,
    prefix: &[String],
    leaves: &mut Vec<(Vec<String>, usize)>,
) {
    let mut segments = prefix.to_vec();
    while let Some(t) = toks.get(*at) {
        if is(Some(t), "{") {
            *at += 1;
            while toks.get(*at).is_some_and(|t| !is(Some(t), "}")) {
                let before = *at;
                use_tree(toks, at, &segments, leaves);
                if is(toks.get(*at), ",") {
                    *at += 1;
                }
                if *at == before {
                    break;
                }
            }
            *at += 1;
            return;
        }
        if is(Some(t), "*") {
            *at += 1;
            leaves.push((segments, t.line));
            return;
        }
        let Some(name) = ident(Some(t)) else { return };
        segments.push(name.to_string());
        *at += 1;
        if is(toks.get(*at), "::") {
            *at += 1;
            continue;
        }
        if ident(toks.get(*at)) == Some("as") {
            *at += 2;
        }
        leaves.push((segments, t.line));
        return;
    }
}

/// A path written in code that starts at `k` with `crate`, `self`, `super` or the crate's
/// name: `crate::a::f(...)`. Not one joined to a path before it, nor `pub(in crate::x)`.
fn inline_path(toks: &[Token], k: usize) -> Option<Vec<String>> {
    let head = ident(toks.get(k))?;
    if !["crate", "self", "super", CRATE_NAME].contains(&head) || !is(toks.get(k + 1), "::") {
        return None;
    }
    let before = |n: usize| k.checked_sub(n).and_then(|j| toks.get(j));
    if is(before(1), "::")
        || (ident(before(1)) == Some("in") && is(before(2), "(") && ident(before(3)) == Some("pub"))
    {
        return None;
    }
    let mut path = vec![head.to_string()];
    let mut at = k + 1;
    while is(toks.get(at), "::")
        && let Some(segment) = ident(toks.get(at + 1))
    {
        path.push(segment.to_string());
        at += 2;
    }
    Some(path)
}

/// The deepest module along `logical` that exists as a file (the root, `lib`, at worst).
fn deepest(logical: &[String], modules: &BTreeSet<String>) -> String {
    let mut found = "lib".to_string();
    for n in 1..=logical.len() {
        let candidate = logical[..n].join("/");
        if !modules.contains(&candidate) {
            break;
        }
        found = candidate;
    }
    found
}

/// The `{` opening a function's body, or `None` for a declaration ending in `;`. Brackets
/// and parentheses hide the `;` of `[u8; 4]`.
fn body_start(toks: &[Token], from: usize) -> Option<usize> {
    let mut nesting = 0i32;
    for (j, t) in toks.iter().enumerate().skip(from) {
        match (t.kind, t.text.as_str()) {
            (Kind::Punct, "(" | "[") => nesting += 1,
            (Kind::Punct, ")" | "]") => nesting -= 1,
            (Kind::Punct, "{") if nesting == 0 => return Some(j),
            (Kind::Punct, ";") if nesting == 0 => return None,
            _ => {}
        }
    }
    None
}

fn matching_close(toks: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, t) in toks.iter().enumerate().skip(open) {
        if is(Some(t), "{") {
            depth += 1;
        } else if is(Some(t), "}") {
            depth -= 1;
            if depth == 0 {
                return Some(j);
            }
        }
    }
    None
}

/// The index of the `open` matching the `close` at `k`, walking backwards.
fn opening(toks: &[Token], k: usize, open: &str, close: &str) -> Option<usize> {
    if !is(toks.get(k), close) {
        return None;
    }
    let mut depth = 0usize;
    for j in (0..=k).rev() {
        if is(toks.get(j), close) {
            depth += 1;
        } else if is(toks.get(j), open) {
            depth -= 1;
            if depth == 0 {
                return Some(j);
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// The checks over the real tree.

struct Source {
    /// As printed: `src/x.rs`.
    path: String,
    unit: Unit,
    text: String,
}

#[derive(Debug, Default)]
struct Outcome {
    errors: Vec<String>,
    warnings: Vec<String>,
    imports: usize,
    fns: usize,
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.file_name().is_some_and(|n| n == "tests.rs") {
            // A parent's unit tests in a file of their own: they import the parent by
            // design, and tests are not held to the sizes.
        } else if path.extension().is_some_and(|x| x == "rs") {
            files.push(path);
        }
    }
}

/// `a/b.rs` is `a/b`, `a/mod.rs` is `a`, `bin/x/main.rs` is `bin/x`.
fn unit_of(relative: &str) -> Unit {
    let stem = relative.strip_suffix(".rs").unwrap_or(relative);
    let module = stem
        .strip_suffix("/mod")
        .or_else(|| stem.strip_suffix("/main").filter(|s| s.starts_with("bin/")))
        .unwrap_or(stem);
    Unit::new(module, module == "main" || module.starts_with("bin/"))
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let relative = file.strip_prefix(&root).expect("under src/");
            let parts: Vec<_> = relative.iter().map(|p| p.to_string_lossy()).collect();
            let relative = parts.join("/");
            Source {
                path: format!("src/{relative}"),
                unit: unit_of(&relative),
                text: std::fs::read_to_string(&file).expect("a readable source file"),
            }
        })
        .collect()
}

fn library_modules(sources: &[Source]) -> BTreeSet<String> {
    sources
        .iter()
        .filter(|s| !s.unit.binary)
        .map(|s| s.unit.module.clone())
        .collect()
}

/// Rows by module, with errors for duplicate, stale and missing entries.
fn rows<'l>(
    sources: &[Source],
    layers: &[&[&'l str]],
    outcome: &mut Outcome,
) -> BTreeMap<&'l str, usize> {
    let mut rows = BTreeMap::new();
    for (row, names) in layers.iter().enumerate() {
        for &name in names.iter() {
            if rows.insert(name, row).is_some() {
                outcome
                    .errors
                    .push(format!("LAYERS lists `{name}` twice: keep one"));
            }
        }
    }
    let files: BTreeSet<&str> = sources.iter().map(|s| s.unit.module.as_str()).collect();
    for name in rows.keys().filter(|name| !files.contains(*name)) {
        outcome.errors.push(format!(
            "LAYERS lists `{name}`, which is no file under src/: remove or rename it"
        ));
    }
    for source in sources
        .iter()
        .filter(|s| !rows.contains_key(s.unit.module.as_str()))
    {
        outcome.errors.push(format!(
            "{} (module `{}`) is not in LAYERS: place it on a row below every module it \
             imports and above every module that imports it",
            source.path, source.unit.module
        ));
    }
    rows
}

fn shown(source: &Source, target: &str) -> String {
    let root = if source.unit.binary {
        CRATE_NAME
    } else {
        "crate"
    };
    match target {
        "lib" => root.to_string(),
        _ => format!("{root}::{}", target.replace('/', "::")),
    }
}

/// Checks `sources` against `layers`, tolerating the upward imports in `known`.
fn check_layers(sources: &[Source], layers: &[&[&str]], known: &[(&str, &str)]) -> Outcome {
    let mut outcome = Outcome::default();
    let modules = library_modules(sources);
    let rows = rows(sources, layers, &mut outcome);
    let mut tolerated = BTreeSet::new();
    for source in sources {
        let facts = analyze(&source.text, &source.unit, &modules);
        outcome.imports += facts.imports.len();
        let module = source.unit.module.as_str();
        let Some(&from) = rows.get(module) else {
            continue;
        };
        for (line, child) in &facts.mods {
            if let Some(&to) = rows.get(child.as_str())
                && to <= from
            {
                let child = shown(source, child);
                outcome.errors.push(format!(
                    "{}:{line} declares mod {child} (layer {from} -> layer {to}): a parent \
                     must sit above its children",
                    source.path
                ));
            }
        }
        for import in &facts.imports {
            let Some(&to) = rows.get(import.target.as_str()) else {
                continue;
            };
            if to > from {
                continue;
            }
            let message = format!(
                "{}:{} imports {} (layer {from} -> layer {to}): imports must point down",
                source.path,
                import.line,
                shown(source, &import.target)
            );
            let pair = (module, import.target.as_str());
            if let Some(entry) = known.iter().find(|k| **k == pair) {
                tolerated.insert(*entry);
                outcome
                    .warnings
                    .push(format!("{message} [tolerated by KNOWN_UPWARD]"));
            } else {
                outcome.errors.push(message);
            }
        }
    }
    for &(from, to) in known.iter().filter(|pair| !tolerated.contains(*pair)) {
        outcome.errors.push(format!(
            "KNOWN_UPWARD lists {from} -> {to}, which no longer imports upward: remove it"
        ));
    }
    outcome
}

/// Checks the sizes of `sources`, tolerating the oversize items in `known`.
fn check_sizes(sources: &[Source], known: &[(&str, &str)]) -> Outcome {
    let mut outcome = Outcome::default();
    let modules = library_modules(sources);
    let mut offenders = Vec::new();
    for source in sources {
        let facts = analyze(&source.text, &source.unit, &modules);
        let module = source.unit.module.as_str();
        outcome.fns += facts.fns.len();
        if facts.lines > MAX_FILE_LINES && !facts.file_justified {
            let message = format!(
                "{} has {} lines (limit {MAX_FILE_LINES}): split it, or say why in a `size:` \
                 comment in its first 5 lines",
                source.path, facts.lines
            );
            offenders.push(((module, String::new()), message));
        }
        for span in facts
            .fns
            .iter()
            .filter(|f| f.lines > MAX_FN_LINES && !f.justified)
        {
            let message = format!(
                "{}:{} fn {} has {} lines (limit {MAX_FN_LINES}): split it, or say why in a \
                 `size:` comment just above it",
                source.path, span.line, span.name, span.lines
            );
            offenders.push(((module, span.name.clone()), message));
        }
    }
    let mut tolerated = BTreeSet::new();
    for ((module, item), message) in offenders {
        if let Some(entry) = known.iter().find(|k| **k == (module, item.as_str())) {
            tolerated.insert(*entry);
            outcome
                .warnings
                .push(format!("{message} [tolerated by KNOWN_OVERSIZE]"));
        } else {
            outcome.errors.push(message);
        }
    }
    for (module, item) in known.iter().filter(|k| !tolerated.contains(*k)) {
        outcome.errors.push(format!(
            "KNOWN_OVERSIZE lists ({module:?}, {item:?}), which is no longer oversize: remove it"
        ));
    }
    outcome
}

fn settle(what: &str, outcome: &Outcome) {
    for warning in &outcome.warnings {
        eprintln!("warning (temporary): {warning}");
    }
    assert!(
        outcome.errors.is_empty(),
        "{what}:\n{}",
        outcome.errors.join("\n")
    );
}

#[test]
fn imports_point_down_the_layers() {
    let sources = sources();
    let outcome = check_layers(&sources, LAYERS, KNOWN_UPWARD);
    settle("the module layers are broken", &outcome);
    // An empty scan would pass everything; the tree has far more imports than this.
    assert!(
        outcome.imports > 50,
        "found only {} imports in src/: the scanner is broken",
        outcome.imports
    );
}

#[test]
fn files_and_functions_stay_small() {
    let sources = sources();
    let outcome = check_sizes(&sources, KNOWN_OVERSIZE);
    settle("files or functions are too long", &outcome);
    assert!(
        outcome.fns > 100,
        "found only {} functions in src/: the scanner is broken",
        outcome.fns
    );
}

// ---------------------------------------------------------------------------------------
// The scanner on small sources, so that the checks cannot pass by finding nothing.

fn modules(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn imports_of(source: &str, unit: &Unit, names: &[&str]) -> Vec<(usize, String)> {
    analyze(source, unit, &modules(names))
        .imports
        .into_iter()
        .map(|i| (i.line, i.target))
        .collect()
}

fn targets(imports: &[(usize, String)]) -> Vec<&str> {
    imports.iter().map(|(_, t)| t.as_str()).collect()
}

#[test]
fn nested_and_multi_line_use_groups() {
    let source = "use crate::a::{b, c::{d, e::F}, self};\n\
                  use crate::{\n    g::H,\n    a::c as cc,\n};\n\
                  use std::collections::HashMap;\n";
    let found = imports_of(
        source,
        &Unit::new("z", false),
        &["lib", "a", "a/c", "g", "z"],
    );
    let expected = [
        (1, "a"),
        (1, "a/c"),
        (1, "a/c"),
        (1, "a"),
        (3, "g"),
        (4, "a/c"),
    ];
    let expected: Vec<_> = expected.iter().map(|&(l, t)| (l, t.to_string())).collect();
    assert_eq!(found, expected);
}

#[test]
fn strings_and_comments_are_not_imports() {
    let source = r##"
        // crate::y::f() in a comment
        /* crate::y /* nested */ crate::y */
        /// [`crate::y`] in a doc comment
        fn f() {
            let s = "crate::y::g() \" crate::y";
            let r = r#"crate::y "quoted" { brace"#;
            let b = b"crate::y";
            crate::x::call(s, r, b);
        }
    "##;
    let found = imports_of(source, &Unit::new("z", false), &["lib", "x", "y", "z"]);
    assert_eq!(found, vec![(9, "x".to_string())]);
}

#[test]
fn raw_strings_chars_and_lifetimes_keep_braces_balanced() {
    let source = "fn first<'a>(x: &'a str) -> &'a str {\n\
                  let open = '{';\n\
                  let quote = '\\'';\n\
                  let escaped = '\\u{7b}';\n\
                  let raw = r##\"{{ \"# }\"##;\n\
                  'outer: loop { break 'outer; }\n\
                  x\n\
                  }\n\
                  fn second() { crate::x::y(); }\n";
    let facts = analyze(source, &Unit::new("z", false), &modules(&["lib", "x", "z"]));
    let spans: Vec<_> = facts
        .fns
        .iter()
        .map(|f| (f.name.as_str(), f.line, f.lines))
        .collect();
    assert_eq!(spans, vec![("first", 1, 8), ("second", 9, 1)]);
    assert_eq!(
        facts.imports,
        vec![Import {
            line: 9,
            target: "x".into()
        }]
    );
}

#[test]
fn super_and_children_resolve_from_the_file() {
    let names = [
        "lib",
        "crd",
        "reconcile",
        "reconcile/apply",
        "reconcile/retry",
        "reconcile/value",
    ];
    let apply = "use super::retry::jittered;\n\
                 use super::*;\n\
                 fn f() { super::value::read(); }\n\
                 pub(in crate::reconcile) fn g() {}\n\
                 #[cfg(test)]\n\
                 mod tests {\n    use super::*;\n    use super::super::value::Value;\n}\n";
    let found = imports_of(apply, &Unit::new("reconcile/apply", false), &names);
    let expected = [
        (1, "reconcile/retry"),
        (2, "reconcile"),
        (3, "reconcile/value"),
        (8, "reconcile/value"),
    ];
    let expected: Vec<_> = expected.iter().map(|&(l, t)| (l, t.to_string())).collect();
    assert_eq!(found, expected);

    let parent =
        "pub mod apply;\nmod retry;\nuse retry::backoff;\nuse super::crd::Spec;\nmod tests {}\n";
    let facts = analyze(parent, &Unit::new("reconcile", false), &modules(&names));
    assert_eq!(
        targets(&imports_of(parent, &Unit::new("reconcile", false), &names)),
        ["reconcile/retry", "crd"]
    );
    let mods: Vec<_> = facts.mods.iter().map(|(l, m)| (*l, m.as_str())).collect();
    assert_eq!(mods, [(1, "reconcile/apply"), (2, "reconcile/retry")]);
}

#[test]
fn binaries_see_the_library_by_its_name() {
    let source = "use baseten_secrets_operator::config::{Args, Config};\n\
                  use baseten_secrets_operator::{controller, shutdown_signal};\n\
                  use crate::local;\n\
                  fn main() { baseten_secrets_operator::telemetry::init(); }\n";
    let names = ["lib", "config", "controller", "telemetry"];
    let found = imports_of(source, &Unit::new("main", true), &names);
    assert_eq!(
        targets(&found),
        ["config", "config", "controller", "lib", "telemetry"]
    );
}

/// A function of `lines` lines, `fn` line to closing brace, under `above`.
fn function(above: &str, lines: usize) -> String {
    let body: String = (0..lines - 2)
        .map(|n| format!("    let _x{n} = {n};\n"))
        .collect();
    format!("{above}#[test]\nfn long() {{\n{body}}}\n")
}

#[test]
fn long_functions_need_a_size_note() {
    let unit = Unit::new("z", false);
    let spans = |source: &str| -> Vec<(usize, bool)> {
        let facts = analyze(source, &unit, &modules(&["lib", "z"]));
        facts.fns.iter().map(|f| (f.lines, f.justified)).collect()
    };
    assert_eq!(spans(&function("", 61)), [(61, false)]);
    assert_eq!(spans(&function("", 60)), [(60, false)]);
    let noted = "// size: one table, kept whole for reading\n/// Docs.\n";
    assert_eq!(spans(&function(noted, 61)), [(61, true)]);
    // A bare `size:`, or one inside another word, is no reason.
    assert_eq!(spans(&function("// size:\n", 61)), [(61, false)]);
    assert_eq!(spans(&function("// max_size: 3\n", 61)), [(61, false)]);
    // Too far above the item to be its note.
    let far = "// size: for something else\nconst A: u8 = 1;\n\n\n\n";
    assert_eq!(spans(&function(far, 61)), [(61, false)]);
}

#[test]
fn long_files_need_a_size_note_at_the_top() {
    let unit = Unit::new("z", false);
    let lines = "const A: u8 = 1;\n".repeat(MAX_FILE_LINES);
    let facts = analyze(&lines, &unit, &modules(&["lib", "z"]));
    assert_eq!((facts.lines, facts.file_justified), (MAX_FILE_LINES, false));
    let noted = format!("//! Docs.\n// size: the whole table lives here\n{lines}");
    assert!(analyze(&noted, &unit, &modules(&["lib", "z"])).file_justified);
}

#[test]
fn modules_are_named_by_their_file() {
    let named = |path: &str| {
        let unit = unit_of(path);
        (unit.module, unit.binary)
    };
    assert_eq!(named("lib.rs"), ("lib".into(), false));
    assert_eq!(named("main.rs"), ("main".into(), true));
    assert_eq!(named("bin/crdgen.rs"), ("bin/crdgen".into(), true));
    assert_eq!(named("reconcile/mod.rs"), ("reconcile".into(), false));
    assert_eq!(
        named("reconcile/apply.rs"),
        ("reconcile/apply".into(), false)
    );
    assert_eq!(
        deepest(
            &["baseten".into(), "BasetenClient".into()],
            &modules(&["baseten"])
        ),
        "baseten"
    );
}

fn source(relative: &str, text: &str) -> Source {
    Source {
        path: format!("src/{relative}"),
        unit: unit_of(relative),
        text: text.into(),
    }
}

#[test]
fn every_layer_offender_is_reported_at_once() {
    let tree = [
        source("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
        source("a.rs", "use crate::b::X;\nfn f() { crate::b::g(); }\n"),
        source("b.rs", "use crate::a::Y;\n"),
        source("c.rs", "use crate::lib_item;\n"),
        source("main.rs", "use baseten_secrets_operator::a::Z;\n"),
    ];
    let layers: &[&[&str]] = &[&["main"], &["lib"], &["b"], &["a", "gone"]];
    let outcome = check_layers(&tree, layers, &[("x", "y")]);
    assert_eq!(
        outcome.errors,
        [
            "LAYERS lists `gone`, which is no file under src/: remove or rename it",
            "src/c.rs (module `c`) is not in LAYERS: place it on a row below every module it \
             imports and above every module that imports it",
            "src/a.rs:1 imports crate::b (layer 3 -> layer 2): imports must point down",
            "src/a.rs:2 imports crate::b (layer 3 -> layer 2): imports must point down",
            "KNOWN_UPWARD lists x -> y, which no longer imports upward: remove it",
        ]
    );
    // Tolerated imports are warned about, not failed on.
    let outcome = check_layers(&tree[..3], &[&["lib"], &["b"], &["a"]], &[("a", "b")]);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(outcome.warnings.len(), 2);
    // A parent below its child fails even with no import between them.
    let outcome = check_layers(&tree[..3], &[&["b"], &["lib"], &["a"]], &[("a", "b")]);
    assert_eq!(
        outcome.errors,
        [
            "src/lib.rs:2 declares mod crate::b (layer 1 -> layer 0): a parent must sit above \
          its children"
        ]
    );
}

#[test]
fn every_size_offender_is_reported_at_once() {
    let long_file = "const A: u8 = 1;\n".repeat(MAX_FILE_LINES + 1);
    let tree = [
        source("lib.rs", "pub mod a;\n"),
        source("a.rs", &format!("{}{long_file}", function("", 61))),
    ];
    let outcome = check_sizes(&tree, &[("a", ""), ("lib", "gone")]);
    assert_eq!(
        outcome.errors,
        [
            "src/a.rs:2 fn long has 61 lines (limit 60): split it, or say why in a `size:` \
             comment just above it",
            "KNOWN_OVERSIZE lists (\"lib\", \"gone\"), which is no longer oversize: remove it",
        ]
    );
    assert_eq!(outcome.warnings.len(), 1, "the file, tolerated");
}
