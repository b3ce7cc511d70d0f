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
///
/// Staff point their mail clients at mailshare instead of the firm's mail
/// server: it relays SMTP submission and proxies IMAP to the real servers,
/// captures what the policy allows of each client conversation, and serves it
/// to colleagues through the admin HTTP API. `mailshare.toml` holds the
/// gateway's settings and names the policy file; both are described in
/// docs/configuration.md, running it as a service in docs/operations.md.
#[derive(Parser)]
#[command(
    name = "mailshare",
    version,
    after_help = concat!(
        "Exit codes:\n",
        "  0  success\n",
        "  1  failure: invalid configuration or policy, store or network error, a message\n",
        "     that could not be ingested (the message says which)\n",
        "  2  usage error: unknown command or option, missing argument (nothing was done)\n",
        "\n",
        "Examples:\n",
        "  mailshare check -c /etc/mailshare/mailshare.toml\n",
        "  mailshare serve -c /etc/mailshare/mailshare.toml\n",
        "  mailshare help ingest",
    )
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: open the store, load the policy, serve until SIGTERM.
    ///
    /// Opens the store, loads and checks mailshare.toml and the policy, binds
    /// every configured listener (SMTP, IMAP, admin API), tells systemd
    /// READY=1 and serves. SIGHUP re-reads the policy and the TLS certificate
    /// (a file with errors keeps the running one; the errors are logged).
    /// SIGTERM or SIGINT stops accepting connections, lets open sessions
    /// finish for [limits] shutdown_grace_secs, flushes the store and exits;
    /// a second SIGTERM stops at once. Logs go to stderr ([log] level and
    /// format; RUST_LOG overrides the level).
    #[command(after_help = concat!(
        "Exit codes:\n",
        "  0  stopped cleanly after SIGTERM or SIGINT\n",
        "  1  could not start (invalid configuration or policy, store in use by another\n",
        "     mailshare process or unreadable, a listener's port in use, certificate\n",
        "     unreadable) or failed while running; the reason is on stderr\n",
        "  2  usage error\n",
        "\n",
        "Examples:\n",
        "  mailshare serve -c /etc/mailshare/mailshare.toml\n",
        "  RUST_LOG=mailshare=debug mailshare serve -c config/mailshare.toml\n",
        "  kill -HUP <pid>    # reload the policy and the certificate",
    ))]
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Validate mailshare.toml and the policy file it names; print every error.
    ///
    /// Reads both files, checks every key, value and cross-reference (unknown
    /// keys are errors; certificate files must exist and hold PEM), and
    /// prints every problem of both files, not just the first, as
    /// file:line:column: message on stderr. On success prints one summary
    /// line (users, contacts, buckets, policy path) on stdout. Nothing is
    /// opened or written: safe to run while `mailshare serve` runs, e.g.
    /// before `systemctl reload mailshare`.
    #[command(after_help = concat!(
        "Exit codes:\n",
        "  0  both files are valid\n",
        "  1  at least one error (each printed on stderr, then the count)\n",
        "  2  usage error\n",
        "\n",
        "Examples:\n",
        "  mailshare check -c /etc/mailshare/mailshare.toml\n",
        "  mailshare check -c /etc/mailshare/mailshare.toml && systemctl reload mailshare",
    ))]
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Write a consistent copy of the store into a new or empty directory.
    ///
    /// Works while `mailshare serve` runs: the running server then makes the
    /// copy, asked through its control socket (<store>/control.sock), so the
    /// directory must be writable by the server (under the systemd unit:
    /// below /var/lib/mailshare). Blobs are hard-linked when the directory is
    /// on the store's file system, copied otherwise. Run it as the service's
    /// user. Restore: stop mailshare, move the copy into place as [store]
    /// path (or point path at it), start again. The spool is not included.
    #[command(after_help = concat!(
        "Exit codes:\n",
        "  0  the copy is complete (a summary line is printed)\n",
        "  1  invalid configuration, DEST not empty, the running server unreachable,\n",
        "     or an I/O error (DEST may then hold a partial copy: delete it)\n",
        "  2  usage error\n",
        "\n",
        "Examples:\n",
        "  runuser -u mailshare -- mailshare backup -c /etc/mailshare/mailshare.toml \\\n",
        "      /var/lib/mailshare/backups/$(date +%F)\n",
        "  mailshare backup -c config/mailshare.toml /tmp/mailshare-backup",
    ))]
    Backup {
        #[command(flatten)]
        config: ConfigArg,
        /// The directory to write the copy into; it must not exist or be empty.
        dest: PathBuf,
    },
    /// Make API tokens for the policy's users.
    #[command(after_help = concat!(
        "Exit codes:\n",
        "  0  success\n",
        "  2  usage error\n",
        "\n",
        "Examples:\n",
        "  mailshare token new alice@acme.example",
    ))]
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Capture .eml files as if relayed (backfills), or replay the spool.
    ///
    /// Each FILE goes through the same capture path as relayed mail, for
    /// --owner in --direction, and one line per file says what was stored
    /// and why (or why not). Files that cannot be read or parsed are reported
    /// and the rest go on. With --spool, replays the messages the SMTP relay
    /// spooled when their capture failed (owner, direction and recipients
    /// come from each sidecar); entries captured are removed, failures stay.
    /// Needs the store to itself: stop `mailshare serve` first.
    #[command(after_help = concat!(
        "Exit codes:\n",
        "  0  every file (or spool entry) was stored or skipped by the policy;\n",
        "     also when there is no spool to replay\n",
        "  1  at least one failed (the others were still captured), or the\n",
        "     configuration is invalid, --owner is not a policy user, or the store is\n",
        "     in use by a running mailshare serve\n",
        "  2  usage error (e.g. FILEs without --owner and --direction)\n",
        "\n",
        "Examples:\n",
        "  mailshare ingest -c config/mailshare.toml --owner alice --direction inbound mail/*.eml\n",
        "  mailshare ingest --owner bob@acme.example --direction outbound \\\n",
        "      --envelope-rcpt hidden@client.example sent.eml\n",
        "  mailshare ingest -c /etc/mailshare/mailshare.toml --spool",
    ))]
    Ingest {
        #[command(flatten)]
        config: ConfigArg,
        /// The policy user whose mail this is: a login or any of their
        /// addresses. Required with FILEs.
        #[arg(long, required_unless_present = "spool")]
        owner: Option<String>,
        /// `inbound` (received by the owner) or `outbound` (sent by the
        /// owner). Required with FILEs.
        #[arg(long, value_parser = parse_direction, required_unless_present = "spool")]
        direction: Option<Direction>,
        /// An SMTP envelope recipient (repeatable); recipients not in the
        /// headers are blind copies. Default: none (the headers only).
        #[arg(long = "envelope-rcpt", value_name = "ADDRESS")]
        envelope_rcpt: Vec<String>,
        /// Replay the spool ([store] spool_path) instead of FILEs.
        #[arg(long, conflicts_with_all = ["owner", "direction", "envelope_rcpt", "files"])]
        spool: bool,
        /// With --spool: replay this directory instead of [store] spool_path.
        #[arg(long, value_name = "DIR", requires = "spool")]
        spool_dir: Option<PathBuf>,
        /// RFC 5322 message files (.eml). Required without --spool.
        #[arg(required_unless_present = "spool", value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

/// `-c, --config` of every command that reads the configuration.
#[derive(clap::Args)]
struct ConfigArg {
    /// Path to mailshare.toml; paths inside it are relative to its directory.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "config/mailshare.toml"
    )]
    path: PathBuf,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new random API token and the token_sha256 line for the policy.
    ///
    /// The token (ms_ and 64 hex digits, 256 random bits from the OS) is for
    /// the user; only its hash goes into their [[users]] entry of policy.toml
    /// (then `systemctl reload mailshare`). Nothing is stored anywhere.
    #[command(after_help = concat!(
        "Exit codes:\n",
        "  0  printed\n",
        "  2  usage error\n",
        "\n",
        "Examples:\n",
        "  mailshare token new alice@acme.example",
    ))]
    New {
        /// The user's address or login, shown in the printed comment.
        user: String,
    },
}

fn parse_direction(s: &str) -> Result<Direction, String> {
    s.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => mailshare::app::serve(&config.path),
        Command::Check { config } => return check(&config.path),
        Command::Backup { config, dest } => {
            mailshare::app::backup(&config.path, &dest).context("backup")
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
        } => mailshare::app::replay_spool(&config.path, spool_dir.as_deref())
            .context("ingest --spool"),
        Command::Ingest {
            config,
            owner,
            direction,
            envelope_rcpt,
            files,
            ..
        } => match (owner, direction) {
            (Some(owner), Some(direction)) => mailshare::app::ingest_files(
                &config.path,
                &owner,
                direction,
                &envelope_rcpt,
                &files,
            )
            .context("ingest"),
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

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every command and subcommand (with its path, e.g. "mailshare token new").
    fn commands(c: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
        let path = if path.is_empty() {
            c.get_name().to_string()
        } else {
            format!("{path} {}", c.get_name())
        };
        out.push((path.clone(), c.clone()));
        for sub in c.get_subcommands() {
            commands(sub, &path, out);
        }
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_documents_itself_its_options_and_its_exit_codes() {
        let mut all = Vec::new();
        commands(&Cli::command(), "", &mut all);
        assert!(
            all.len() >= 7,
            "{:?}",
            all.iter().map(|c| &c.0).collect::<Vec<_>>()
        );
        for (path, c) in &all {
            let about = c.get_about().map(ToString::to_string).unwrap_or_default();
            assert!(!about.trim().is_empty(), "{path}: no description");
            let after = c
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(
                after.contains("Exit codes:\n  0  "),
                "{path}: no exit codes"
            );
            assert!(
                after.contains("  2  usage error"),
                "{path}: exit code 2 missing"
            );
            let examples = after.split_once("Examples:\n").map_or("", |(_, e)| e);
            assert!(examples.contains("mailshare "), "{path}: no example");
            for arg in c.get_arguments() {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                assert!(
                    !help.trim().is_empty(),
                    "{path}: argument {} has no help",
                    arg.get_id()
                );
            }
        }
    }
}
