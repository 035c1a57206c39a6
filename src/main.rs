use clap::Parser;
use flext_kubernetes::cli::{self, Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => cli::check(config).await,
        Command::Run { config } => cli::run(config).await,
        Command::Hints {
            file,
            tag,
            config,
            lang,
        } => cli::hints(&file, tag.as_deref(), config.as_deref(), lang.as_deref()),
        Command::Render {
            target,
            args,
            tag,
            config,
            show_secrets,
        } => {
            cli::render(
                &target,
                &args,
                tag.as_deref(),
                config.as_deref(),
                show_secrets,
            )
            .await
        }
        Command::InstallRunner { dir } => cli::install_runner(&dir),
        Command::Runner {
            job_dir,
            secret_dir,
            work_dir,
            cache_dir,
            warm,
        } => {
            let paths = flext_kubernetes::runner::Paths {
                job: job_dir,
                secret: secret_dir,
                work: work_dir,
                cache: cache_dir,
            };
            let code = if warm {
                flext_kubernetes::runner::run_warm(&paths).await
            } else {
                flext_kubernetes::runner::run(&paths).await
            };
            return std::process::ExitCode::from(u8::try_from(code).unwrap_or(2));
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprint!("{}", cli::report(&error));
            std::process::ExitCode::FAILURE
        }
    }
}
