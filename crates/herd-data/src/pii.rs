//! PII redaction (paper §3.1.1: "domains … with large amounts of personally identifiable
//! information"): e-mail addresses, IP addresses and phone numbers in the text are replaced by
//! reserved values that belong to no one — `email@example.com`, the documentation
//! addresses `192.0.2.1` / `2001:db8::1` (RFC 5737 / 3849) and `555-0100` (the reserved
//! fictional number range). Loopback and private IPv4 addresses (`127.*`, `10.*`, `192.168.*`,
//! `172.16–31.*`) are kept: they identify no one and are common in technical text.

use regex::{Captures, Regex};

/// The redactor with its compiled patterns.
pub struct Pii {
    email: Regex,
    ipv4: Regex,
    ipv6: Regex,
    phone: Regex,
}

/// How many of each were replaced in a text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Redactions {
    /// E-mail addresses.
    pub emails: usize,
    /// IPv4 and IPv6 addresses.
    pub ips: usize,
    /// Phone numbers.
    pub phones: usize,
}

impl Default for Pii {
    fn default() -> Self {
        Pii {
            email: Regex::new(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b").expect("regex"),
            ipv4: Regex::new(r"\b(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b").expect("regex"),
            ipv6: Regex::new(r"(?i)\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b|\b(?:[0-9a-f]{1,4}:){1,6}:(?:[0-9a-f]{1,4}:){0,5}[0-9a-f]{1,4}\b")
                .expect("regex"),
            phone: Regex::new(
                r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)|\b\d{2,4})[\s.-]\d{3,4}[\s.-]\d{4}\b",
            )
            .expect("regex"),
        }
    }
}

impl Pii {
    /// `text` with its PII replaced, and the counts.
    pub fn redact(&self, text: &str) -> (String, Redactions) {
        let mut counts = Redactions::default();
        let text = self.email.replace_all(text, |_: &Captures| {
            counts.emails += 1;
            "email@example.com"
        });
        let text = self.ipv4.replace_all(&text, |c: &Captures| {
            let octets: Vec<u32> = (1..=4).map(|i| c[i].parse().unwrap_or(999)).collect();
            let private = matches!(
                octets[..],
                [127, ..] | [10, ..] | [192, 168, ..] | [0, 0, 0, 0]
            ) || (octets[0] == 172 && (16..32).contains(&octets[1]));
            if octets.iter().any(|&o| o > 255) || private {
                return c[0].to_string();
            }
            counts.ips += 1;
            "192.0.2.1".to_string()
        });
        let text = self.ipv6.replace_all(&text, |_: &Captures| {
            counts.ips += 1;
            "2001:db8::1"
        });
        let text = self.phone.replace_all(&text, |_: &Captures| {
            counts.phones += 1;
            "555-0100"
        });
        (text.into_owned(), counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_ips_and_phones_are_replaced() {
        let pii = Pii::default();
        let (text, n) = pii.redact(
            "Mail Jane.Doe+news@mail.example.co.uk or call (555) 123-4567 / +44 20 7946 0958. \
             Server 8.8.4.4 and fe80:0:0:0:202:b3ff:fe1e:8329; local 127.0.0.1, 10.1.2.3; \
             version 1.2.3.4000 and 999.1.1.1 are not addresses.",
        );
        assert_eq!(
            text,
            "Mail email@example.com or call 555-0100 / 555-0100. \
             Server 192.0.2.1 and 2001:db8::1; local 127.0.0.1, 10.1.2.3; \
             version 1.2.3.4000 and 999.1.1.1 are not addresses."
        );
        assert_eq!(
            n,
            Redactions {
                emails: 1,
                ips: 2,
                phones: 2
            }
        );
    }
}
