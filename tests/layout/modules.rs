//! A crate target's module tree read from its source files, the paths each module
//! names, and which file imports which.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

/// The root files of every target of the crate in `dir`: its library and binary,
/// tests, benches and examples.
pub fn crate_roots(dir: &Path) -> BTreeSet<PathBuf> {
    let mut roots = BTreeSet::new();
    for base in [dir.to_path_buf(), dir.join("src")] {
        for name in ["lib.rs", "main.rs"] {
            if base.join(name).is_file() {
                roots.insert(base.join(name));
            }
        }
    }
    let entries = |d: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    // Test folders with a main.rs (tests/e2e/main.rs in the tests crate).
    for sub in entries(dir) {
        if sub.join("main.rs").is_file() && !sub.ends_with("src") {
            roots.insert(sub.join("main.rs"));
        }
    }
    for kind in ["tests", "benches", "examples"] {
        for entry in entries(&dir.join(kind)) {
            if entry.extension().is_some_and(|e| e == "rs") {
                roots.insert(entry);
            } else if entry.join("main.rs").is_file() {
                roots.insert(entry.join("main.rs"));
            }
        }
    }
    roots
}

#[derive(Debug, Default)]
struct Module {
    file: usize,
    parent: Option<usize>,
    children: BTreeMap<String, usize>,
    /// `use` items: the name they bring in, and the path it stands for.
    uses: BTreeMap<String, Vec<String>>,
    /// Every path the module names that may lead into the crate.
    refs: Vec<Vec<String>>,
}

/// One crate target: its files and modules.
#[derive(Debug)]
pub struct Crate {
    base: PathBuf,
    files: Vec<PathBuf>,
    modules: Vec<Module>,
}

impl Crate {
    /// Reads the module tree that starts at `root` (a lib.rs, main.rs, ...); files are
    /// named relative to `base`.
    pub fn load(root: &Path, base: &Path) -> Result<Crate, String> {
        let mut krate = Crate {
            base: base.to_path_buf(),
            files: Vec::new(),
            modules: vec![Module::default()],
        };
        let dir = root.parent().unwrap_or(Path::new(".")).to_path_buf();
        krate.load_file(root, 0, &dir)?;
        Ok(krate)
    }

    fn load_file(&mut self, path: &Path, module: usize, child_dir: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let tokens = TokenStream::from_str(&text)
            .map_err(|e| format!("tokenizing {}: {e}", path.display()))?;
        self.files.push(path.to_path_buf());
        self.modules[module].file = self.files.len() - 1;
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        self.walk(&tokens, module, path, child_dir)
    }

    fn add_module(&mut self, parent: usize, name: &str) -> usize {
        self.modules.push(Module {
            file: self.modules[parent].file,
            parent: Some(parent),
            ..Module::default()
        });
        let index = self.modules.len() - 1;
        self.modules[parent].children.insert(name.to_owned(), index);
        index
    }

    /// Reads the items of `module` (in `file`) from `tokens`.
    fn walk(
        &mut self,
        tokens: &[TokenTree],
        module: usize,
        file: &Path,
        child_dir: &Path,
    ) -> Result<(), String> {
        let mut path_attr: Option<String> = None;
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Punct(p) if p.as_char() == '#' => {
                    // An attribute: `#[path = "..."]` places the next `mod`; paths in
                    // any other (`#[error("{}", crate::x::Y)]`) are imports like any.
                    let group = tokens.get(i + 1).and_then(|t| match t {
                        TokenTree::Group(g) if g.delimiter() == Delimiter::Bracket => Some(g),
                        _ => None,
                    });
                    if let Some(g) = group {
                        let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                        if let [TokenTree::Ident(id), TokenTree::Punct(eq), TokenTree::Literal(lit)] =
                            inner.as_slice()
                        {
                            if id == "path" && eq.as_char() == '=' {
                                path_attr = Some(lit.to_string().trim_matches('"').to_owned());
                            }
                        }
                        self.walk(&inner, module, file, child_dir)?;
                        i += 2;
                        continue;
                    }
                }
                TokenTree::Ident(id) if id == "mod" => {
                    if let Some(TokenTree::Ident(name)) = tokens.get(i + 1) {
                        let name = name.to_string();
                        match tokens.get(i + 2) {
                            Some(TokenTree::Punct(p)) if p.as_char() == ';' => {
                                let child = self.add_module(module, &name);
                                let (path, dir) = match path_attr.take() {
                                    Some(rel) => {
                                        let path =
                                            file.parent().unwrap_or(Path::new(".")).join(rel);
                                        let dir = path.with_extension("");
                                        (path, dir)
                                    }
                                    None => {
                                        let flat = child_dir.join(format!("{name}.rs"));
                                        if flat.is_file() {
                                            (flat, child_dir.join(&name))
                                        } else {
                                            (
                                                child_dir.join(&name).join("mod.rs"),
                                                child_dir.join(&name),
                                            )
                                        }
                                    }
                                };
                                self.load_file(&path, child, &dir)?;
                                i += 3;
                                continue;
                            }
                            Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                                let child = self.add_module(module, &name);
                                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                                self.walk(&inner, child, file, &child_dir.join(&name))?;
                                i += 3;
                                continue;
                            }
                            _ => {}
                        }
                    }
                }
                TokenTree::Ident(id) if id == "use" => {
                    let end = tokens[i..]
                        .iter()
                        .position(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ';'))
                        .map_or(tokens.len(), |n| i + n);
                    let mut entries = Vec::new();
                    use_tree(&tokens[i + 1..end], Vec::new(), &mut entries);
                    for (alias, path) in entries {
                        if let Some(alias) = alias {
                            self.modules[module].uses.insert(alias, path.clone());
                        }
                        self.modules[module].refs.push(path);
                    }
                    i = end + 1;
                    continue;
                }
                TokenTree::Ident(id) if id == "crate" || id == "super" || id == "self" => {
                    let (path, used) = path_at(&tokens[i..]);
                    if path.len() > 1 {
                        self.modules[module].refs.push(path);
                        i += used;
                        continue;
                    }
                }
                TokenTree::Group(g) => {
                    let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                    self.walk(&inner, module, file, child_dir)?;
                }
                _ => {}
            }
            path_attr = None;
            i += 1;
        }
        Ok(())
    }

    /// The module a path named in `module` leads to, if it stays in the crate.
    fn resolve(&self, module: usize, path: &[String], depth: usize) -> Option<usize> {
        if depth > 16 || path.is_empty() {
            return None;
        }
        let mut cur = module;
        let mut rest = path;
        match path[0].as_str() {
            "crate" => {
                cur = 0;
                rest = &path[1..];
            }
            "self" => rest = &path[1..],
            "super" => {
                while rest.first().is_some_and(|s| s == "super") {
                    cur = self.modules[cur].parent?;
                    rest = &rest[1..];
                }
            }
            first => {
                if !self.modules[cur].children.contains_key(first) {
                    let target = self.modules[cur].uses.get(first)?;
                    let mut full = target.clone();
                    full.extend_from_slice(&path[1..]);
                    return self.resolve(cur, &full, depth + 1);
                }
            }
        }
        for (n, seg) in rest.iter().enumerate() {
            if let Some(&child) = self.modules[cur].children.get(seg) {
                cur = child;
            } else if let Some(target) = self.modules[cur].uses.get(seg) {
                let mut full = target.clone();
                full.extend_from_slice(&rest[n + 1..]);
                return self.resolve(cur, &full, depth + 1).or(Some(cur));
            } else {
                break;
            }
        }
        Some(cur)
    }

    fn name(&self, file: usize) -> String {
        let path = &self.files[file];
        path.strip_prefix(&self.base)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// file -> imported file -> one path that shows it.
    fn edges(&self) -> BTreeMap<usize, BTreeMap<usize, String>> {
        let mut edges: BTreeMap<usize, BTreeMap<usize, String>> = BTreeMap::new();
        for (index, module) in self.modules.iter().enumerate() {
            for path in &module.refs {
                let Some(target) = self.resolve(index, path, 0) else {
                    continue;
                };
                let to = self.modules[target].file;
                if to != module.file {
                    edges
                        .entry(module.file)
                        .or_default()
                        .entry(to)
                        .or_insert_with(|| path.join("::"));
                }
            }
        }
        edges
    }

    /// The files that the file whose name ends with `suffix` imports.
    #[allow(dead_code)] // used by the checker's own test
    pub fn imports(&self, suffix: &str) -> Vec<String> {
        let edges = self.edges();
        self.files
            .iter()
            .enumerate()
            .filter(|(_, f)| f.ends_with(suffix))
            .flat_map(|(i, _)| edges.get(&i).into_iter().flat_map(|e| e.keys()))
            .map(|&f| self.name(f))
            .collect()
    }

    /// Each set of files that import each other (a strongly connected component of the
    /// import graph with more than one file), as its edges: `a.rs -> b.rs (crate::b::f)`.
    pub fn file_cycles(&self) -> Vec<Vec<String>> {
        let names: Vec<String> = (0..self.files.len()).map(|f| self.name(f)).collect();
        cycles(&names, &self.edges())
    }
}

impl Crate {
    /// Each set of module folders (and files beside them) that import each other: the
    /// import graph with every file inside a folder of the crate root's folder taken as
    /// that folder (`src/suite/runner.rs` is `src/suite/`). A cycle here that no
    /// [`Crate::file_cycles`] shows is a folder's back-arrow: `suite/` uses `report/`,
    /// which uses `suite/` again through another file.
    pub fn folder_cycles(&self) -> Vec<Vec<String>> {
        let Some(root) = self.files.first() else {
            return Vec::new();
        };
        let src = root.parent().unwrap_or(Path::new(".")).to_path_buf();
        let unit_name = |file: &Path| -> String {
            let rel = file.strip_prefix(&src).unwrap_or(file);
            let mut parts = rel.components();
            let first = parts
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned());
            match (first, parts.next()) {
                (Some(dir), Some(_)) => format!("{dir}/"),
                (Some(file), None) => file,
                _ => rel.display().to_string(),
            }
        };
        let mut units: Vec<String> = Vec::new();
        let mut unit_of = Vec::new();
        for file in &self.files {
            let name = unit_name(file);
            let index = units.iter().position(|u| *u == name).unwrap_or_else(|| {
                units.push(name);
                units.len() - 1
            });
            unit_of.push(index);
        }
        let mut edges: BTreeMap<usize, BTreeMap<usize, String>> = BTreeMap::new();
        for (from, targets) in self.edges() {
            for (to, path) in targets {
                let (a, b) = (unit_of[from], unit_of[to]);
                if a != b {
                    edges
                        .entry(a)
                        .or_default()
                        .entry(b)
                        .or_insert_with(|| format!("{} uses {path}", self.name(from)));
                }
            }
        }
        cycles(&units, &edges)
    }
}

/// Each strongly connected set of more than one node of `edges`, as its edges:
/// `a -> b (why)`, nodes named by `names`.
fn cycles(names: &[String], edges: &BTreeMap<usize, BTreeMap<usize, String>>) -> Vec<Vec<String>> {
    strongly_connected(names.len(), edges)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let members: BTreeSet<usize> = c.iter().copied().collect();
            let mut lines = Vec::new();
            for &from in &c {
                for (to, why) in edges.get(&from).into_iter().flatten() {
                    if members.contains(to) {
                        lines.push(format!("{} -> {} ({why})", names[from], names[*to]));
                    }
                }
            }
            lines
        })
        .collect()
}

/// A path at the start of `tokens` (`crate::a::b`): its segments and how many tokens
/// it took.
fn path_at(tokens: &[TokenTree]) -> (Vec<String>, usize) {
    let mut path = Vec::new();
    let mut i = 0;
    while let Some(TokenTree::Ident(id)) = tokens.get(i) {
        path.push(id.to_string());
        i += 1;
        if is_path_sep(&tokens[i.min(tokens.len())..]) {
            i += 2;
        } else {
            break;
        }
    }
    (path, i)
}

fn is_path_sep(tokens: &[TokenTree]) -> bool {
    matches!(
        tokens,
        [TokenTree::Punct(a), TokenTree::Punct(b), ..]
            if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':'
    )
}

/// Expands a use tree (the tokens between `use` and `;`) into (name brought in, path).
fn use_tree(
    tokens: &[TokenTree],
    prefix: Vec<String>,
    out: &mut Vec<(Option<String>, Vec<String>)>,
) {
    let mut path = prefix;
    let mut i = 0;
    if is_path_sep(tokens) {
        i = 2;
    }
    loop {
        match tokens.get(i) {
            Some(TokenTree::Ident(id)) if id == "self" && !path.is_empty() => {
                let alias = path.last().cloned();
                out.push((alias, path.clone()));
                return;
            }
            Some(TokenTree::Ident(id)) => {
                path.push(id.to_string());
                i += 1;
                if is_path_sep(&tokens[i..]) {
                    i += 2;
                    continue;
                }
                let alias = match (tokens.get(i), tokens.get(i + 1)) {
                    (Some(TokenTree::Ident(a)), Some(TokenTree::Ident(name))) if a == "as" => {
                        Some(name.to_string())
                    }
                    _ => path.last().cloned(),
                };
                out.push((alias.filter(|a| a != "_"), path));
                return;
            }
            Some(TokenTree::Punct(p)) if p.as_char() == '*' => {
                out.push((None, path));
                return;
            }
            Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                for part in inner.split(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ','))
                {
                    if !part.is_empty() {
                        use_tree(part, path.clone(), out);
                    }
                }
                return;
            }
            _ => return,
        }
    }
}

/// Tarjan's strongly connected components over nodes `0..n`.
fn strongly_connected(
    n: usize,
    edges: &BTreeMap<usize, BTreeMap<usize, String>>,
) -> Vec<Vec<usize>> {
    struct State<'a> {
        edges: &'a BTreeMap<usize, BTreeMap<usize, String>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        let targets: Vec<usize> = s
            .edges
            .get(&v)
            .map(|e| e.keys().copied().collect())
            .unwrap_or_default();
        for w in targets {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            component.sort_unstable();
            s.out.push(component);
        }
    }
    let mut s = State {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}
