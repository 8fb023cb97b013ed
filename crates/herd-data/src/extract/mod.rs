//! HTML → main text (paper §3.1.1: "a custom parser that extracts high-quality diverse text",
//! markdown markers removed). The page is decoded (BOM, `<meta charset>`, else UTF-8 with a
//! Windows-1252 fallback) and parsed by html5ever (the `scraper` crate) as a browser without
//! scripts would (`<noscript>` holds markup); then:
//!
//! 1. Boilerplate subtrees are skipped: scripts and styles, forms and controls, `nav`,
//!    `aside`, `footer`, page-level `header`, figure captions, ruby annotations, hidden
//!    elements, teasers that link elsewhere, and elements whose class or id names navigation,
//!    menus, sidebars, comments, cookie banners, ads, sharing, related links, captions,
//!    credits, bylines and post metadata (the id of a section that opens with a heading is
//!    its title, not a role, and is not read). A class or id (or
//!    a `header`/`aside`/`nav`/`footer`/`form` tag) is not believed on an element that holds
//!    40% of the page's text outside links: themes wrap whole articles in `sidebar-wrapper`.
//! 2. The rest becomes blocks — headings, paragraphs, list items, table rows, code, quotes,
//!    and text sitting directly in containers — each with its text and the share of it inside
//!    links. Soft hyphens and zero-width spaces are dropped.
//! 3. Each block scores for its container and, half, for the container's container (longer
//!    text and commas score, link text does not; `article`, `main` and content-like class
//!    names weigh more). The best container is the main content; its blocks are kept, except
//!    link lists. Outside it, link-free blocks are kept from 100 characters, and from 50 under
//!    the main container's three nearest ancestors (page builders nest every paragraph).
//!
//! The text is plain: one block per line, table cells separated by tabs, code verbatim, no
//! markdown. No rule names a site.

use ego_tree::iter::Edge;
use ego_tree::NodeRef;
use html5ever::tendril::TendrilSink;
use scraper::{Html, HtmlTreeSink, Node};
use std::collections::HashMap;

use boilerplate::{is_skipped, name_parts, names_match, CONTENT, SKIPPED};

mod boilerplate;

/// Tags that start a block of their own.
const BLOCKS: [&str; 27] = [
    "p",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "li",
    "pre",
    "blockquote",
    "tr",
    "dt",
    "dd",
    "figcaption",
    "caption",
    "div",
    "section",
    "article",
    "main",
    "td",
    "th",
    "ul",
    "ol",
    "table",
    "figure",
    "address",
    "body",
];

/// Characters from which a link-free block outside the main container is kept too (an article
/// split over several containers, a teaser above the body).
const SUBSTANTIAL: usize = 100;

/// Containers above the main one whose other link-free blocks are kept from `NEAR_CHARS`
/// characters (page builders put each paragraph of an article in its own nest of wrappers).
const NEAR_LEVELS: usize = 3;

/// See [`NEAR_LEVELS`].
const NEAR_CHARS: usize = 50;

/// A block of text and where it sits.
#[derive(Debug)]
struct Block {
    text: String,
    link_chars: usize,
    heading: bool,
    /// Containers holding the block, innermost first (node ids).
    containers: Vec<ego_tree::NodeId>,
    /// Part of a table row (cells joined by tabs).
    preformatted: bool,
}

/// Where the walk is.
#[derive(Debug, Clone, Copy, Default)]
struct Context {
    in_link: bool,
    in_article: bool,
}

/// Elements nested deeper than this are read as if they were inline (their text joins the
/// block around them): browsers cap the depth of the tree the same way (Blink at 512), and the
/// cap bounds the work and memory per block on a page nested a hundred thousand levels deep.
/// Both walks below are iterative, so no depth can overflow the stack.
const MAX_DEPTH: usize = 256;

/// Characters of text outside links in every element's subtree (skipped tags left out), and
/// in the whole page.
fn text_outside_links(root: NodeRef<Node>) -> (usize, HashMap<ego_tree::NodeId, usize>) {
    let mut sizes = HashMap::new();
    // Per open node: its running total and whether its children are inside a link.
    let mut open: Vec<(usize, bool)> = vec![(0, false)];
    let mut skipping = 0usize;
    for edge in root.traverse() {
        match edge {
            Edge::Open(node) => {
                if skipping > 0 {
                    skipping += 1;
                    continue;
                }
                let in_link = open.last().is_some_and(|f| f.1);
                match node.value() {
                    Node::Element(el) if SKIPPED.contains(&el.name()) => skipping = 1,
                    Node::Element(el) => open.push((0, in_link || el.name() == "a")),
                    Node::Text(t) if !in_link => {
                        open.push((t.chars().filter(|c| !c.is_whitespace()).count(), in_link))
                    }
                    _ => open.push((0, in_link)),
                }
            }
            Edge::Close(node) => {
                if skipping > 0 {
                    skipping -= 1;
                    continue;
                }
                let (total, _) = open.pop().expect("opened");
                if node.value().is_element() {
                    sizes.insert(node.id(), total);
                }
                open.last_mut().expect("the root's frame").0 += total;
            }
        }
    }
    (open[0].0, sizes)
}

/// What an open node of the walk did, undone when it closes.
enum Frame {
    /// Its text went to the current block; children see `Context`.
    Inline(Context),
    /// It started a block of its own (and, when a container, entered the container list).
    Block { at: Context, container: bool },
}

/// Collects blocks by walking the tree.
struct Walker {
    blocks: Vec<Block>,
    weight: HashMap<ego_tree::NodeId, f64>,
    /// Text outside links per element ([`text_outside_links`]) and of the whole page.
    sizes: HashMap<ego_tree::NodeId, usize>,
    page_text: usize,
}

impl Walker {
    /// Text outside nested blocks goes to the enclosing block; nested blocks become their own.
    /// `top` is the page's outermost block.
    fn walk(&mut self, root: NodeRef<Node>, containers: &mut Vec<ego_tree::NodeId>, top: Block) {
        let mut frames: Vec<Frame> = Vec::new();
        // The open blocks, innermost last; text goes to the last.
        let mut blocks = vec![top];
        let mut skipping = 0usize;
        let mut depth = 0usize;
        for edge in root.traverse() {
            let node = match edge {
                Edge::Open(node) => node,
                Edge::Close(node) => {
                    if skipping > 0 {
                        skipping -= 1;
                        continue;
                    }
                    if node.value().is_element() {
                        depth -= 1;
                    }
                    if let Some(Frame::Block { container, .. }) = frames.pop() {
                        let mut block = blocks.pop().expect("the frame's block");
                        self.flush(&mut block, containers);
                        if container {
                            containers.remove(0);
                        }
                    }
                    continue;
                }
            };
            if skipping > 0 {
                skipping += 1;
                continue;
            }
            let at = frames.last().map_or(Context::default(), |f| match f {
                Frame::Inline(at) | Frame::Block { at, .. } => *at,
            });
            let current = blocks.last_mut().expect("the top block");
            let el = match node.value() {
                Node::Text(t) => {
                    let text: &str = t;
                    let cleaned: String;
                    let text = if text.contains(INVISIBLE) {
                        cleaned = text.replace(INVISIBLE, "");
                        cleaned.as_str()
                    } else {
                        text
                    };
                    if current.preformatted {
                        current.text.push_str(text);
                    } else {
                        push_collapsed(&mut current.text, text);
                    }
                    if at.in_link {
                        current.link_chars += text.trim().chars().count();
                    }
                    frames.push(Frame::Inline(at));
                    continue;
                }
                Node::Element(el) => el,
                _ => {
                    frames.push(Frame::Inline(at));
                    continue;
                }
            };
            let name = el.name();
            let flat = depth >= MAX_DEPTH;
            let skipped = if flat {
                SKIPPED.contains(&name)
            } else {
                let share = self.sizes.get(&node.id()).copied().unwrap_or(0) as f64
                    / self.page_text.max(1) as f64;
                is_skipped(node, at.in_article, share)
            };
            if skipped || name == "br" {
                if name == "br" && !skipped {
                    current.text.push('\n');
                }
                skipping = 1;
                continue;
            }
            depth += 1;
            let at = Context {
                in_link: at.in_link || name == "a",
                in_article: at.in_article || matches!(name, "article" | "main"),
            };
            if matches!(name, "td" | "th") && !current.text.is_empty() {
                current.text.push('\t');
            }
            if flat || !BLOCKS.contains(&name) || matches!(name, "td" | "th") {
                frames.push(Frame::Inline(at));
                continue;
            }
            let container = matches!(
                name,
                "div"
                    | "section"
                    | "article"
                    | "main"
                    | "body"
                    | "td"
                    | "ul"
                    | "ol"
                    | "table"
                    | "blockquote"
                    | "figure"
            );
            if container {
                let mut w = 1.0;
                if matches!(name, "article" | "main") || el.attr("itemprop") == Some("articleBody")
                {
                    w = 1.5;
                } else if names_match(&name_parts(el, true), &CONTENT) {
                    w = 1.25;
                }
                self.weight.insert(node.id(), w);
                containers.insert(0, node.id());
            }
            self.flush(current, containers);
            blocks.push(Block {
                text: String::new(),
                link_chars: 0,
                heading: matches!(name, "h1" | "h2" | "h3" | "h4" | "h5" | "h6"),
                containers: containers.clone(),
                preformatted: name == "pre",
            });
            frames.push(Frame::Block { at, container });
        }
        let mut top = blocks.pop().expect("the top block");
        self.flush(&mut top, containers);
    }

    /// Ends `block` (when it has text) and starts an empty one in the same place.
    fn flush(&mut self, block: &mut Block, containers: &[ego_tree::NodeId]) {
        let text = if block.preformatted {
            block.text.trim_matches('\n').to_string()
        } else {
            block
                .text
                .split('\n')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("\n")
        };
        if !text.is_empty() {
            self.blocks.push(Block {
                text,
                link_chars: block.link_chars,
                heading: block.heading,
                containers: block.containers.clone(),
                preformatted: block.preformatted,
            });
        }
        block.text.clear();
        block.link_chars = 0;
        block.containers = containers.to_vec();
    }
}

/// Invisible characters dropped from the text: soft hyphens (`&shy;`, hyphenation hints inside
/// words), zero-width spaces and joiners' cousins that split words for no reader.
const INVISIBLE: [char; 3] = ['\u{ad}', '\u{200b}', '\u{feff}'];

/// Appends `text` with whitespace runs as one space.
fn push_collapsed(out: &mut String, text: &str) {
    let starts_space = text.starts_with(char::is_whitespace);
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() {
        if starts_space && !out.is_empty() && !out.ends_with([' ', '\n', '\t']) {
            out.push(' ');
        }
        return;
    }
    if starts_space && !out.is_empty() && !out.ends_with([' ', '\n', '\t']) {
        out.push(' ');
    }
    out.push_str(&words.join(" "));
    if text.ends_with(char::is_whitespace) {
        out.push(' ');
    }
}

/// The main text of an HTML page (bytes in any declared encoding).
pub fn extract(html: &[u8]) -> String {
    extract_str(&crate::charset::decode(html))
}

/// The main text of an HTML page already decoded.
pub fn extract_str(html: &str) -> String {
    // Parsed as a browser without scripts would: `<noscript>` holds markup (Blogger and other
    // script-rendered pages put the article there), not raw text.
    let mut options = html5ever::ParseOpts::default();
    options.tree_builder.scripting_enabled = false;
    let doc = html5ever::driver::parse_document(HtmlTreeSink::new(Html::new_document()), options)
        .one(html);
    let root = doc.tree.root();
    let (page_text, sizes) = text_outside_links(root);
    let mut walker = Walker {
        blocks: Vec::new(),
        weight: HashMap::new(),
        sizes,
        page_text,
    };
    let mut containers = Vec::new();
    let top = Block {
        text: String::new(),
        link_chars: 0,
        heading: false,
        containers: Vec::new(),
        preformatted: false,
    };
    walker.walk(root, &mut containers, top);
    let blocks = walker.blocks;
    // Score the containers.
    let mut score: HashMap<ego_tree::NodeId, f64> = HashMap::new();
    for b in &blocks {
        let len = b.text.chars().count();
        if len < 25 && !b.heading {
            continue;
        }
        let link_density = b.link_chars as f64 / len.max(1) as f64;
        let s = (1.0 + b.text.matches(',').count() as f64 + (len as f64 / 100.0).min(3.0))
            * (1.0 - link_density);
        for (depth, id) in b.containers.iter().take(2).enumerate() {
            *score.entry(*id).or_default() += s / (depth + 1) as f64;
        }
    }
    let best = score
        .iter()
        .map(|(id, s)| (*id, s * walker.weight.get(id).copied().unwrap_or(1.0)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(id, _)| id);
    let ancestors: Vec<ego_tree::NodeId> = best
        .and_then(|id| {
            blocks.iter().find_map(|b| {
                let at = b.containers.iter().position(|c| *c == id)?;
                Some(
                    b.containers[at + 1..]
                        .iter()
                        .take(NEAR_LEVELS)
                        .copied()
                        .collect(),
                )
            })
        })
        .unwrap_or_default();
    let mut lines = Vec::new();
    for b in &blocks {
        let inside = best.is_none_or(|id| b.containers.contains(&id));
        let len = b.text.chars().count();
        let link_density = b.link_chars as f64 / len.max(1) as f64;
        let near = ancestors.iter().any(|a| b.containers.contains(a));
        let substantial = len >= SUBSTANTIAL && link_density < 0.1
            || near && len >= NEAR_CHARS && link_density < 0.1;
        if (inside || substantial) && (b.heading || link_density <= 0.5) {
            lines.push(b.text.as_str());
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn article_text_is_kept_and_boilerplate_dropped() {
        let page = r#"<html><head><title>T</title><style>p{}</style></head><body>
            <div class="navbar"><a href="/">Home</a> <a href="/x">Products</a></div>
            <div id="cookie-banner">We use cookies. Accept?</div>
            <article><h1>River  floods</h1>
              <p>The river rose, as it does each spring, over the fields and into the town.</p>
              <p>Farmers, who had expected it, moved their animals to the hills, and waited.</p>
              <ul><li>Bring boats</li><li>Store grain</li></ul>
              <table><tr><td>Year</td><td>Height</td></tr><tr><td>1910</td><td>4 m</td></tr></table>
              <pre>let x = 1;
  indented();</pre>
            </article>
            <aside>Related: <a href="/a">other story</a></aside>
            <footer>© 2024 Example Inc. All rights reserved.</footer>
            <script>var tracking = 1;</script></body></html>"#;
        let text = extract_str(page);
        assert_eq!(
            text,
            "River floods\nThe river rose, as it does each spring, over the fields and into the town.\n\
             Farmers, who had expected it, moved their animals to the hills, and waited.\n\
             Bring boats\nStore grain\nYear\tHeight\n1910\t4 m\nlet x = 1;\n  indented();"
        );
    }

    #[test]
    fn names_are_weighed_against_what_the_element_holds() {
        let para =
            "The council met on Tuesday, and after a long debate, it voted to rebuild the bridge.";
        let page = format!(
            r#"<html><body><div class="sidebar-wrapper"><div class="entry">
              <p>{para}</p><p>{para}</p><p>{para}</p>
              <div id="single-developer-sharing"><h2>Sharing alone</h2><p>Pull, push.</p></div>
              <noscript><p>Written out for readers with scripts off.</p></noscript>
              <p>Ge&shy;mein&shy;de&shy;rat <ruby>子<rt>こ</rt></ruby>ども</p></div></div>
              <div class="sharedaddy"><h3>Share this:</h3></div>
              <div class="related-teaser"><a href="/other">Another story, with a long summary of what happened there and why it matters.</a></div>
              <div class="wp-caption-text">Photo: the old bridge, as it stood in 1910, before the flood.</div>
            </body></html>"#
        );
        let text = extract_str(&page);
        assert_eq!(text.matches(para).count(), 3, "{text}");
        for gone in ["Share this", "Another story", "Photo:"] {
            assert!(!text.contains(gone), "{gone:?} in {text}");
        }
        for kept in [
            "Sharing alone",
            "Pull, push.",
            "scripts off",
            "Gemeinderat 子ども",
        ] {
            assert!(text.contains(kept), "{kept:?} not in {text}");
        }
    }

    #[test]
    fn a_page_nested_a_hundred_thousand_levels_deep_is_read() {
        // Recursion per level overflowed the stack here; the walks are iterative and elements
        // past MAX_DEPTH are read inline. (Blocks nest a thousand deep, inline elements the
        // rest: html5ever's own tree builder takes time quadratic in the depth of nested
        // blocks — 6 s for 40,000 divs — which is its cost, not a crash.)
        let (blocks, inline) = (1_000, 100_000);
        let mut page = String::from("<html><body>");
        page.push_str(&"<div>".repeat(blocks));
        page.push_str(&"<span>".repeat(inline));
        page.push_str("The river flooded the valley, and the town was rebuilt on the hill.");
        page.push_str(&"</span>".repeat(inline));
        page.push_str(&"</div>".repeat(blocks));
        page.push_str("</body></html>");
        let text = extract_str(&page);
        assert!(text.contains("The river flooded the valley"), "{text:?}");
    }
}
