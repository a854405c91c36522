//! Every command and option says what it is for: `--help` never shows a
//! bare name. Walks clap's whole command tree, so a new subcommand or flag
//! without a doc comment fails here.

use clap::CommandFactory;

use crate::Cli;

/// `(path, what)` of everything in `cmd`'s tree without a description.
fn undescribed(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
    let path = if path.is_empty() {
        cmd.get_name().to_owned()
    } else {
        format!("{path} {}", cmd.get_name())
    };
    let empty =
        |s: Option<&clap::builder::StyledStr>| s.is_none_or(|s| s.to_string().trim().is_empty());
    if empty(cmd.get_about()) {
        missing.push(format!("`{path}` has no about"));
    }
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.is_hide_set() || id == "help" || id == "version" {
            continue;
        }
        if empty(arg.get_help()) {
            missing.push(format!("`{path}`: argument `{id}` has no help"));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() != "help" {
            undescribed(sub, &path, missing);
        }
    }
}

#[test]
fn every_command_and_option_has_a_description() {
    let mut cmd = Cli::command();
    cmd.build();
    let mut missing = Vec::new();
    undescribed(&cmd, "", &mut missing);
    assert!(missing.is_empty(), "undescribed:\n{}", missing.join("\n"));
}

#[test]
fn the_command_line_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn config_is_offered_only_where_it_is_read() {
    let mut cmd = Cli::command();
    cmd.build();
    let has_config = |c: &clap::Command| {
        c.get_arguments()
            .any(|a| a.get_id() == "config" || a.get_long() == Some("config"))
    };
    for name in ["agent", "provider"] {
        let sub = cmd
            .find_subcommand(name)
            .unwrap_or_else(|| panic!("{name}"));
        assert!(
            !has_config(sub),
            "`authmd {name}` offers --config, which it never reads"
        );
        for s in sub.get_subcommands() {
            assert!(
                !has_config(s),
                "`authmd {name} {}` offers --config",
                s.get_name()
            );
        }
    }
    for name in ["serve", "migrate", "check-config", "revoke-all"] {
        let sub = cmd
            .find_subcommand(name)
            .unwrap_or_else(|| panic!("{name}"));
        assert!(has_config(sub), "`authmd {name}` lacks --config");
    }
    let list = cmd
        .find_subcommand("audit")
        .and_then(|a| a.find_subcommand("list"))
        .unwrap_or_else(|| panic!("audit list"));
    assert!(has_config(list), "`authmd audit list` lacks --config");
}

/// The help of `audit list` and `audit export` must not describe `tail`'s
/// defaults (the options are shared).
#[test]
fn shared_options_describe_every_command_they_appear_in() {
    let mut cmd = Cli::command();
    cmd.build();
    let audit = cmd
        .find_subcommand("audit")
        .unwrap_or_else(|| panic!("audit"));
    for name in ["list", "export"] {
        let sub = audit
            .find_subcommand(name)
            .unwrap_or_else(|| panic!("{name}"));
        for arg in sub.get_arguments() {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(
                !help.contains("tail"),
                "`audit {name} --{}`: {help}",
                arg.get_id()
            );
        }
    }
}
