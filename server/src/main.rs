//! `huashen`: the server binary.

use anyhow::Context;
use clap::{Parser, Subcommand};
use huashen::config::Config;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "huashen",
    version,
    about = "Real-time streaming digital-human server"
)]
struct Cli {
    /// TOML config file (optional; defaults apply without it). Environment
    /// variables HUASHEN_<SECTION>__<KEY> override it.
    #[arg(long, short, global = true, env = "HUASHEN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server until SIGINT/SIGTERM.
    Serve {
        /// Where the speech models run: cpu, cuda:N or auto (CUDA when this
        /// build has it and the machine has an NVIDIA driver). Overrides
        /// `models.device`.
        #[arg(long)]
        device: Option<String>,
        /// Refuse to start with settings unfit for production: the
        /// encryption key beside the data (generated into the data
        /// directory, or a key file inside it), or the dev tenant on.
        #[arg(long)]
        production: bool,
    },
    /// Load and check the configuration, print it, and exit.
    ValidateConfig,
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and print its first API key (shown only once).
    Create {
        /// Tenant name: 1..64 of a-z, 0-9, '-', '_'.
        name: String,
    },
    /// Create another API key for an existing tenant and print it.
    AddKey {
        name: String,
        /// A note to tell keys apart.
        #[arg(long, default_value = "cli")]
        label: String,
    },
}

fn init_tracing() {
    let directives = std::env::var("HUASHEN_LOG").ok();
    tracing_subscriber::fmt()
        .with_env_filter(huashen::logging::filter(directives.as_deref()))
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    let mut config = Config::load(cli.config.as_deref(), std::env::vars())?;
    match cli.command {
        Command::Serve { device, production } => {
            if production {
                let problems = config.production_problems();
                if !problems.is_empty() {
                    anyhow::bail!(
                        "--production: not starting:\n  - {}",
                        problems.join("\n  - ")
                    );
                }
            }
            if let Some(device) = device {
                huashen_inference::device::parse(&device)
                    .map_err(|e| anyhow::anyhow!("--device: {e}"))?;
                config.models.device = device;
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let signal = huashen::app::shutdown_signal();
                huashen::app::serve_until(config, signal).await
            })
        }
        Command::ValidateConfig => {
            println!("configuration is valid:\n{config:#?}");
            Ok(())
        }
        Command::Tenant { command } => tenant(config, command),
    }
}

fn tenant(config: Config, command: TenantCommand) -> anyhow::Result<()> {
    let store = huashen::store::Store::open(
        &config.storage,
        huashen::store::crypto::Keyring::from_config(&config.storage)?,
    )
    .with_context(|| {
        if config.storage.database_url.0.trim().is_empty() {
            format!(
                "cannot open the data directory {}",
                config.storage.data_dir.display()
            )
        } else {
            "cannot open the PostgreSQL database of storage.database_url".to_owned()
        }
    })?;
    match command {
        TenantCommand::Create { name } => {
            huashen::store::tenants::validate_tenant_name(&name).map_err(anyhow::Error::msg)?;
            let (tenant, key) =
                huashen::store::tenants::create_tenant(store.blocking(), &name, "cli").map_err(
                    |e| match e {
                        huashen::store::StoreError::Conflict(_) => {
                            anyhow::anyhow!("a tenant named {name:?} already exists")
                        }
                        e => e.into(),
                    },
                )?;
            eprintln!("created tenant {} ({})", tenant.name, tenant.id);
            eprintln!("API key (shown only once; store it safely):");
            println!("{key}");
        }
        TenantCommand::AddKey { name, label } => {
            let tenant = store
                .blocking()
                .tenant_by_name(&name)?
                .ok_or_else(|| anyhow::anyhow!("no tenant named {name:?}"))?;
            let key =
                huashen::store::tenants::create_key(store.blocking(), &tenant.id, &label, "cli")?;
            eprintln!("new API key for tenant {name} (shown only once):");
            println!("{key}");
        }
    }
    Ok(())
}
