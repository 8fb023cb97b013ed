//! Project Gutenberg boilerplate: the licence header before `*** START OF THE PROJECT
//! GUTENBERG EBOOK … ***` and everything from `*** END OF THE PROJECT GUTENBERG EBOOK … ***`
//! (and the older `End of the Project Gutenberg EBook` / `End of Project Gutenberg's` forms)
//! are removed; a text without the markers is returned unchanged.

/// `text` without the Gutenberg header and footer.
pub fn strip_boilerplate(text: &str) -> &str {
    let upper = text.to_ascii_uppercase();
    let mut start = 0;
    for marker in [
        "*** START OF THE PROJECT GUTENBERG",
        "*** START OF THIS PROJECT GUTENBERG",
        "***START OF THE PROJECT GUTENBERG",
    ] {
        if let Some(at) = upper.find(marker) {
            start = text[at..].find('\n').map_or(text.len(), |nl| at + nl + 1);
            break;
        }
    }
    let mut end = text.len();
    for marker in [
        "*** END OF THE PROJECT GUTENBERG",
        "*** END OF THIS PROJECT GUTENBERG",
        "***END OF THE PROJECT GUTENBERG",
        "END OF THE PROJECT GUTENBERG EBOOK",
        "END OF PROJECT GUTENBERG'S",
    ] {
        if let Some(at) = upper[start..].find(marker) {
            end = end.min(start + at);
        }
    }
    text[start..end].trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_footer_are_removed() {
        let book = "The Project Gutenberg eBook of Persuasion\nLicence text…\n\
            *** START OF THE PROJECT GUTENBERG EBOOK PERSUASION ***\n\nChapter 1\nSir Walter.\n\n\
            *** END OF THE PROJECT GUTENBERG EBOOK PERSUASION ***\nMore licence.";
        assert_eq!(strip_boilerplate(book), "Chapter 1\nSir Walter.");
        let old = "Header\n***START OF THE PROJECT GUTENBERG EBOOK X***\nBody.\nEnd of the Project Gutenberg EBook of X\n";
        assert_eq!(strip_boilerplate(old), "Body.");
        assert_eq!(strip_boilerplate("plain text"), "plain text");
    }
}
