//! The `mailshare` binary: a thin command-line layer over the library.
//! Exit codes: 0 success, 1 failure (invalid files, a message that could not
//! be ingested), 2 usage errors (from clap).

use anyhow::Context;
use clap::{Parser, Subcommand};
use mailshare::engine::Direction;
use std::path::PathBuf;
use std::process::ExitCode;

/// Mail-proxy gateway that shares client conversations with colleagues at the
/// level a TOML policy allows.
#[derive(Parser)]
#[command(name = "mailshare", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: open the store, load the policy, serve until SIGTERM.
    Serve {
        /// Path to mailshare.toml.
        #[arg(short, long, default_value = "config/mailshare.toml")]
        config: PathBuf,
    },
    /// Validate mailshare.toml and the policy file it names; print every error
    /// as file:line:column: message and exit non-zero if there is any.
    Check {
        /// Path to mailshare.toml.
        #[arg(short, long, default_value = "config/mailshare.toml")]
        config: PathBuf,
    },
    /// Write a consistent copy of the store into a new or empty directory,
    /// also while `mailshare serve` runs. Restore: stop mailshare, point
    /// `[store] path` at the copy (or move it into place), start again.
    Backup {
        /// Path to mailshare.toml.
        #[arg(short, long, default_value = "config/mailshare.toml")]
        config: PathBuf,
        /// The directory to create (must not exist, or be empty).
        dest: PathBuf,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Capture .eml files through the same path as relayed mail (backfills,
    /// demos, tests). Reports per file what was stored and why. With
    /// --spool, replays the messages the SMTP relay spooled when their
    /// capture failed (owner, direction and recipients from each sidecar)
    /// and removes those captured.
    Ingest {
        /// Path to mailshare.toml.
        #[arg(short, long, default_value = "config/mailshare.toml")]
        config: PathBuf,
        /// The policy user whose mail this is (a login or an address).
        #[arg(long, required_unless_present = "spool")]
        owner: Option<String>,
        /// inbound (received by the owner) or outbound (sent by the owner).
        #[arg(long, value_parser = parse_direction, required_unless_present = "spool")]
        direction: Option<Direction>,
        /// SMTP envelope recipient (repeatable): recipients not in the headers are blind copies.
        #[arg(long = "envelope-rcpt", value_name = "ADDRESS")]
        envelope_rcpt: Vec<String>,
        /// Replay the spool ([store] spool_path) instead of FILEs.
        #[arg(long, conflicts_with_all = ["owner", "direction", "envelope_rcpt", "files"])]
        spool: bool,
        /// With --spool: replay this directory instead.
        #[arg(long, value_name = "DIR", requires = "spool")]
        spool_dir: Option<PathBuf>,
        /// RFC 5322 message files.
        #[arg(required_unless_present = "spool", value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new random API token for a user and the token_sha256 line to
    /// put in that user's [[users]] entry of the policy.
    New {
        /// The user's address (or login), for the printed hint.
        user: String,
    },
}

fn parse_direction(s: &str) -> Result<Direction, String> {
    s.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => mailshare::app::serve(&config),
        Command::Check { config } => return check(&config),
        Command::Backup { config, dest } => {
            mailshare::app::backup(&config, &dest).context("backup")
        }
        Command::Token {
            command: TokenCommand::New { user },
        } => {
            let t = mailshare::app::new_token();
            println!("# API token for {user}: give it to them, store only the hash");
            println!("token = \"{}\"", t.token);
            println!("token_sha256 = \"{}\"", t.sha256_hex);
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest {
            config,
            spool: true,
            spool_dir,
            ..
        } => mailshare::app::replay_spool(&config, spool_dir.as_deref()).context("ingest --spool"),
        Command::Ingest {
            config,
            owner,
            direction,
            envelope_rcpt,
            files,
            ..
        } => match (owner, direction) {
            (Some(owner), Some(direction)) => {
                mailshare::app::ingest_files(&config, &owner, direction, &envelope_rcpt, &files)
                    .context("ingest")
            }
            _ => Err(anyhow::anyhow!("ingest needs --owner and --direction")),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailshare: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(config: &std::path::Path) -> ExitCode {
    match mailshare::config::load(config) {
        Ok(loaded) => {
            let p = &loaded.policy;
            println!(
                "{}: ok ({} users, {} contacts, {} buckets; policy {})",
                config.display(),
                p.users.len(),
                p.contacts.len(),
                p.buckets.len(),
                loaded.policy_path.display()
            );
            ExitCode::SUCCESS
        }
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            eprintln!("mailshare check: {} error(s)", diags.len());
            ExitCode::FAILURE
        }
    }
}
