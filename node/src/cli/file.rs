//! `holdfast file`: files posted to chat rooms, through the Web service.

use super::chat::ChatUser;
use super::common::{load_config, runtime};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum FileCmd {
    /// Upload a file to a room and post a message pointing to it.
    Upload {
        #[command(flatten)]
        who: ChatUser,
        #[arg(long)]
        room: String,
        path: PathBuf,
    },
    /// Download a file of a room.
    Download {
        #[command(flatten)]
        who: ChatUser,
        #[arg(long)]
        room: String,
        /// The file id (from the upload, or the room's post).
        #[arg(long)]
        file: String,
        /// Where to write it (default: its name, in this folder).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub(crate) fn run(cmd: FileCmd) -> Result<(), String> {
    use holdfast::chat_client::ChatClient;
    match cmd {
        FileCmd::Upload { who, room, path } => {
            let config = load_config(&who.config)?;
            let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| format!("{}: not a file", path.display()))?;
            let (id, size, seq) = runtime()?.block_on(async {
                let mut c =
                    ChatClient::connect(&config, &who.user, who.channel.as_deref(), who.timeout)
                        .await?;
                c.join(&room, 0).await?;
                let (id, size) = c.upload(&room, &name, data).await?;
                let seq = c
                    .post(
                        &room,
                        &format!("shared a file: {name} ({size} bytes), file id {id}"),
                    )
                    .await?;
                Ok::<_, String>((id, size, seq))
            })?;
            println!("uploaded {name} ({size} bytes) as {id}; posted to {room} as #{seq}");
        }
        FileCmd::Download {
            who,
            room,
            file,
            out,
        } => {
            let config = load_config(&who.config)?;
            let (name, data) = runtime()?.block_on(async {
                let mut c =
                    ChatClient::connect(&config, &who.user, who.channel.as_deref(), who.timeout)
                        .await?;
                c.join(&room, 0).await?;
                c.download(&room, &file).await
            })?;
            // Never let a stored name choose a path outside this folder.
            let safe = std::path::Path::new(&name)
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(&file));
            let out = out.unwrap_or(safe);
            std::fs::write(&out, &data).map_err(|e| format!("{}: {e}", out.display()))?;
            println!("downloaded {} bytes to {}", data.len(), out.display());
        }
    }
    Ok(())
}
