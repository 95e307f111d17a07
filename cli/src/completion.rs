//! `yavipin completion SHELL`: the shell completion script, generated from the command
//! line's own definition by `clap_complete`, so that it cannot fall behind the commands.

use clap::ValueEnum;

/// The shells a completion script is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Shell {
    /// GNU bash, with or without the bash-completion package.
    Bash,
    /// The Z shell.
    Zsh,
    /// The friendly interactive shell.
    Fish,
}

/// Prints the completion script of `command` for `shell` to standard output.
pub(crate) fn print(shell: Shell, command: &mut clap::Command) {
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, command, "yavipin", &mut std::io::stdout());
}
