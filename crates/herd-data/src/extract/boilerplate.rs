//! What is boilerplate: tags whose subtrees never hold main text, and class and id names that
//! mark navigation, comments, ads, sharing and the like — weighed against how much of the
//! page's text the element holds (themes wrap whole articles in `sidebar-wrapper`).

use ego_tree::NodeRef;
use scraper::Node;

/// Tags whose subtrees never hold main text.
pub(super) const SKIPPED: [&str; 23] = [
    "script",
    "style",
    "template",
    "rt",
    "rp",
    "figcaption",
    "svg",
    "canvas",
    "iframe",
    "object",
    "embed",
    "form",
    "button",
    "select",
    "option",
    "input",
    "textarea",
    "label",
    "nav",
    "aside",
    "footer",
    "head",
    "dialog",
];

/// Class or id words that mark boilerplate, as any part of a name (`tl-ad-heading`).
pub(super) const BOILERPLATE: [&str; 37] = [
    "nav",
    "navbar",
    "navigation",
    "menu",
    "footer",
    "sidebar",
    "comment",
    "comments",
    "cookie",
    "cookies",
    "consent",
    "banner",
    "advert",
    "advertisement",
    "ads",
    "ad",
    "sponsor",
    "promo",
    "share",
    "sharing",
    "social",
    "related",
    "breadcrumb",
    "breadcrumbs",
    "subscribe",
    "newsletter",
    "popup",
    "modal",
    "skip",
    "masthead",
    "toolbar",
    "pagination",
    "pager",
    "login",
    "signup",
    "disqus",
    "recommended",
];

/// Class or id words that mark the content (the last three only weigh a container more; they
/// do not overrule a boilerplate word).
pub(super) const CONTENT: [&str; 9] = [
    "content", "article", "post", "entry", "story", "blog", "text", "body", "main",
];

/// The class names and id of an element, lower case, each split at `-` and `_` — leaving out
/// state and modifier names (`is-open`, `has-ads`, `js-…`, BEM `block--modifier`), which say
/// what an element has rather than what it is. With `id` false the id is left out.
pub(super) fn name_parts(el: &scraper::node::Element, id: bool) -> Vec<Vec<String>> {
    let mut names = Vec::new();
    let id = if id { el.attr("id") } else { None };
    for value in [el.attr("class"), id].into_iter().flatten() {
        for name in value.split_whitespace() {
            let name = name.to_ascii_lowercase();
            if name.contains("--") || ["is-", "has-", "js-"].iter().any(|p| name.starts_with(p)) {
                continue;
            }
            names.push(
                name.split(['-', '_'])
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect(),
            );
        }
    }
    names
}

/// Whether a name's first or last part is one of `words`.
pub(super) fn names_match(names: &[Vec<String>], words: &[&str]) -> bool {
    names.iter().any(|parts| {
        [parts.first(), parts.last()]
            .into_iter()
            .flatten()
            .any(|p| words.contains(&p.as_str()))
    })
}

/// Parts of class or id names that mark boilerplate wherever they occur in the name
/// (`jp-relatedposts`, `sharedaddy`, `kommentarModul`, `wp-caption-text`, `postmetadata`,
/// `author-bio`, `entryfooter`, `post-ratings`, `kastenBox`; `werbung` and `anzeige` are German
/// for advertisement).
pub(super) const BOILERPLATE_STEMS: [&str; 21] = [
    "related",
    "share",
    "sharing",
    "social",
    "comment",
    "kommentar",
    "breadcrumb",
    "newsletter",
    "caption",
    "credit",
    "copyright",
    "meta",
    "author",
    "rating",
    "tags",
    "notice",
    "infobox",
    "kasten",
    "footer",
    "werbung",
    "anzeige",
];

/// Whether a name holds a boilerplate stem while no other name of the element is a content
/// name (first or last part a content word, no stem).
pub(super) fn boilerplate_names(names: &[Vec<String>]) -> bool {
    let stem = |parts: &Vec<String>| {
        parts
            .iter()
            .any(|p| BOILERPLATE_STEMS.iter().any(|s| p.contains(s)))
    };
    let content = |parts: &Vec<String>| {
        !stem(parts) && names_match(std::slice::from_ref(parts), &CONTENT[..CONTENT.len() - 3])
    };
    names.iter().any(stem) && !names.iter().any(content)
}

/// Whether a subtree holds a link (`<a href>`).
pub(super) fn links_elsewhere(node: NodeRef<Node>) -> bool {
    node.descendants().any(|d| {
        d.value()
            .as_element()
            .is_some_and(|e| e.name() == "a" && e.attr("href").is_some())
    })
}

/// Whether `el` is boilerplate by its tag or attributes (hidden, or a boilerplate class or id).
/// A boilerplate class or id does not hold when the element has `MAIN_SHARE` of the page's
/// text outside links: themes wrap the article in `sidebar-wrapper` or `for_sidebar` too.
pub(super) fn is_skipped(node: NodeRef<Node>, in_article: bool, text_share: f64) -> bool {
    let Node::Element(el) = node.value() else {
        return false;
    };
    let name = el.name();
    let page_part = matches!(name, "header" | "aside" | "nav" | "footer" | "form");
    if page_part && text_share >= MAIN_SHARE {
        return false;
    }
    if SKIPPED.contains(&name) || (name == "header" && !in_article) {
        return true;
    }
    if el.attr("hidden").is_some() || el.attr("aria-hidden") == Some("true") {
        return true;
    }
    let style = el
        .attr("style")
        .unwrap_or("")
        .replace(' ', "")
        .to_ascii_lowercase();
    if style.contains("display:none") || style.contains("visibility:hidden") {
        return true;
    }
    if matches!(name, "body" | "html" | "article" | "main") {
        return false;
    }
    // A section that opens with a heading is named after it (`id="sharing-a-repository"`, as
    // documentation generators and wikis do): its id says nothing about boilerplate.
    let titled = node
        .children()
        .find_map(|c| c.value().as_element().map(|e| e.name()))
        .is_some_and(|first| matches!(first, "h1" | "h2" | "h3" | "h4" | "h5" | "h6"));
    let names = name_parts(el, !titled);
    // A teaser that links elsewhere summarises another page; one without a link is the
    // article's own lead.
    let teaser = names.iter().flatten().any(|p| p.contains("teaser"));
    if teaser && text_share < MAIN_SHARE && links_elsewhere(node) {
        return true;
    }
    // `widget` opens the names of sidebar boxes (`widget_text`); page builders end the names of
    // content boxes with it (`elementor-widget`).
    let widget = names
        .iter()
        .any(|parts| parts.first().is_some_and(|p| p == "widget"));
    let boilerplate = names
        .iter()
        .flatten()
        .any(|p| BOILERPLATE.contains(&p.as_str()));
    (boilerplate || widget)
        && !names_match(&names, &CONTENT[..CONTENT.len() - 3])
        && (text_share < MAIN_SHARE || names_match(&names, &ALWAYS_BOILERPLATE))
        || boilerplate_names(&names) && text_share < MAIN_SHARE
}

/// Share of the page's text from which a boilerplate class or id is not believed.
pub(super) const MAIN_SHARE: f64 = 0.4;

/// Class or id words believed whatever the element holds (comment threads are long).
pub(super) const ALWAYS_BOILERPLATE: [&str; 5] =
    ["comment", "comments", "disqus", "cookie", "consent"];
