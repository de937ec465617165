//! `holdfast file`: files posted to chat rooms, through the Web service.

use super::chat::ChatUser;
use super::common::{load_config, printable, runtime, Failure};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum FileCmd {
    /// Upload a file to a room and post a message pointing to it.
    #[command(
        after_help = "Example: holdfast file upload -c cluster.toml --user alice@corp.example --room general report.pdf"
    )]
    Upload {
        #[command(flatten)]
        who: ChatUser,
        /// The room to post it to (the user must be allowed to post).
        #[arg(long)]
        room: String,
        /// The file to upload.
        path: PathBuf,
    },
    /// Download a file of a room.
    #[command(
        after_help = "Example: holdfast file download -c cluster.toml --user bob@corp.example --room general --file ID"
    )]
    Download {
        #[command(flatten)]
        who: ChatUser,
        /// The room the file was posted to.
        #[arg(long)]
        room: String,
        /// The file id (from the upload, or the room's post).
        #[arg(long)]
        file: String,
        /// Where to write it (default: its name, in this folder).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Overwrite the file if it exists already.
        #[arg(long)]
        force: bool,
    },
}

pub(crate) fn run(cmd: FileCmd) -> Result<(), Failure> {
    use holdfast::chat_client::ChatError;
    match cmd {
        FileCmd::Upload { who, room, path } => {
            let config = load_config(&who.config)?;
            let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| format!("{}: not a file", path.display()))?;
            let (id, size, seq) = runtime()?.block_on(async {
                let mut c = who.connect(&config).await?;
                c.join(&room, 0).await?;
                let (id, size) = c.upload(&room, &name, data).await?;
                let seq = c
                    .post(
                        &room,
                        &format!("shared a file: {name} ({size} bytes), file id {id}"),
                    )
                    .await?;
                Ok::<_, ChatError>((id, size, seq))
            })?;
            println!("uploaded {name} ({size} bytes) as {id}; posted to {room} as #{seq}");
        }
        FileCmd::Download {
            who,
            room,
            file,
            out,
            force,
        } => {
            let config = load_config(&who.config)?;
            let exists = |out: &std::path::Path| {
                format!(
                    "{}: exists already; not overwritten (--force overwrites it)",
                    printable(&out.display().to_string())
                )
            };
            // Refuse before downloading when we know the name already.
            if let Some(out) = out.as_deref().filter(|o| !force && o.exists()) {
                return Err(exists(out).into());
            }
            let (name, data) = runtime()?.block_on(async {
                let mut c = who.connect(&config).await?;
                c.join(&room, 0).await?;
                c.download(&room, &file).await
            })?;
            // Never let a stored name choose a path outside this folder.
            let safe = std::path::Path::new(&name)
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(&file));
            let out = out.unwrap_or(safe);
            let mut open = std::fs::OpenOptions::new();
            open.write(true);
            if force {
                open.create(true).truncate(true);
            } else {
                // Refuses a file that appeared meanwhile too.
                open.create_new(true);
            }
            let written = open.open(&out).and_then(|mut f| {
                use std::io::Write;
                f.write_all(&data)
            });
            match written {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(exists(&out).into())
                }
                Err(e) => return Err(format!("{}: {e}", out.display()).into()),
                Ok(()) => {}
            }
            // The name is the uploader's: escaped like the rest of their text.
            println!(
                "downloaded {} bytes to {}",
                data.len(),
                printable(&out.display().to_string())
            );
        }
    }
    Ok(())
}
