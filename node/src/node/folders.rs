//! The node's folders on disk: the data folder readied (private, locked,
//! writable) before anything uses it, and the compliance export folder with
//! the modes a pickup system needs.

use super::NodeError;
use crate::config::{Config, NodeConfig, Role};
use crate::file_disk::{
    check_writable, create_private_dir, lock_folder, make_private, set_mode, sync_dir,
    write_file_atomically, FolderLock, Tightened,
};
use crate::path_error::PathError;
use holdfast_actors::core::actor::StoreError;
use holdfast_actors::core::output::OutputFile;
use std::path::Path;

/// Permission bits of the compliance export folder and of its files:
/// private (0700, 0600), or readable by the node user's group (0750, 0640)
/// with `[compliance] group_read`, for a pickup system in that group.
pub fn export_modes(group_read: bool) -> (u32, u32) {
    if group_read {
        (0o750, 0o640)
    } else {
        (0o700, 0o600)
    }
}

/// Creates the export folder if missing, with its mode (see
/// [`export_modes`]). A folder the node does not own keeps its mode.
fn export_folder(dir: &Path, group_read: bool) -> std::io::Result<()> {
    create_private_dir(dir)?;
    if group_read {
        let _ = set_mode(dir, export_modes(true).0);
    }
    Ok(())
}

fn export_error(path: &Path, e: std::io::Error) -> StoreError {
    // ENOSPC and EDQUOT: the disk or the quota is full.
    if matches!(e.raw_os_error(), Some(28) | Some(122)) {
        StoreError::NoSpace
    } else {
        StoreError::Io(format!("{}: {e}", path.display()))
    }
}

/// Readies the node's data folder before anything else uses it: created
/// private (0700) if missing, locked against a second process for as long
/// as this one runs, checked writable, and made private if an older version
/// left it (or files in it) open to other users. Errors name the folder
/// and carry the operating system's error.
pub(crate) fn prepare_data_folder(
    config: &Config,
    node: &NodeConfig,
) -> Result<FolderLock, NodeError> {
    let data = &node.data;
    let fail = |what: &'static str, e: std::io::Error| PathError::doing(data, what, e);
    create_private_dir(data).map_err(|e| fail("cannot create the data folder", e))?;
    let lock = lock_folder(data)?;
    check_writable(data).map_err(|e| fail("the data folder is not writable", e))?;
    // A group-readable export folder inside the data folder keeps its mode.
    let skip = config
        .compliance_output
        .as_deref()
        .filter(|_| config.compliance_group_read);
    match make_private(data, skip) {
        Ok(done) => {
            for (folder, old) in &done.folders {
                tracing::info!(node = %node.name, folder = %folder.display(), old_mode = format!("{old:o}"), "folder was open to other users: made private to the node's user");
            }
            if done.files > 0 {
                tracing::info!(node = %node.name, folder = %data.display(), files = done.files, "files were open to other users: made private to the node's user");
            }
            for f in &done.failed {
                tracing::warn!(node = %node.name, error = %f, "cannot make private");
            }
        }
        Err(e) => {
            tracing::warn!(node = %node.name, folder = %data.display(), error = %e, "cannot make the data folder private")
        }
    }
    if node.has(Role::Compliance) {
        if let Some(dir) = &config.compliance_output {
            prepare_export_folder(node, dir, config.compliance_group_read);
        }
    }
    Ok(lock)
}

/// The compliance export folder at start: created, and given its mode. A
/// problem here is not fatal: the export keeps its batch staged and raises
/// `compliance_export_failed` until the folder can be written.
fn prepare_export_folder(node: &NodeConfig, dir: &Path, group_read: bool) {
    let (folder_mode, _) = export_modes(group_read);
    if let Err(e) = create_private_dir(dir) {
        tracing::warn!(node = %node.name, folder = %dir.display(), error = %e, "cannot create the compliance output folder");
        return;
    }
    let changed = if group_read {
        set_mode(dir, folder_mode).map(|old| Tightened {
            folders: old.map(|o| (dir.to_path_buf(), o)).into_iter().collect(),
            ..Default::default()
        })
    } else {
        make_private(dir, None)
    };
    match changed {
        Ok(done) => {
            for (folder, old) in done.folders {
                tracing::info!(node = %node.name, folder = %folder.display(), old_mode = format!("{old:o}"), new_mode = format!("{folder_mode:o}"), "compliance output folder mode set");
            }
            if done.files > 0 {
                tracing::info!(node = %node.name, folder = %dir.display(), files = done.files, "export files were open to other users: made private to the node's user");
            }
            for f in &done.failed {
                tracing::warn!(node = %node.name, error = %f, "cannot make private");
            }
        }
        Err(e) => {
            tracing::warn!(node = %node.name, folder = %dir.display(), error = %e, "cannot set the compliance output folder's mode")
        }
    }
}

/// Writes a compliance export's files into the output folder, each
/// atomically and in order (the manifest comes last), with the folder's
/// and files' modes.
pub(crate) fn write_export(config: &Config, files: &[OutputFile]) -> Result<(), StoreError> {
    let Some(dir) = &config.compliance_output else {
        return Err(StoreError::Io("no [compliance] output folder".into()));
    };
    let (_, file_mode) = export_modes(config.compliance_group_read);
    export_folder(dir, config.compliance_group_read).map_err(|e| export_error(dir, e))?;
    files.iter().try_for_each(|f| {
        let path = dir.join(&f.name);
        // Uploaded files go in a subfolder (`files/`), with the folder's
        // mode.
        if let Some(sub) = path.parent().filter(|p| *p != dir.as_path()) {
            export_folder(sub, config.compliance_group_read).map_err(|e| export_error(sub, e))?;
        }
        write_file_atomically(&path, &f.data, file_mode).map_err(|e| export_error(&path, e))
    })
}

/// Removes files of the compliance output folder (an acknowledged
/// batch's), a file already gone being no error; the folders are synced so
/// that the removals are durable.
pub(crate) fn remove_export(config: &Config, names: &[String]) -> Result<(), StoreError> {
    let Some(dir) = &config.compliance_output else {
        return Err(StoreError::Io("no [compliance] output folder".into()));
    };
    let mut folders = std::collections::BTreeSet::new();
    for name in names {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(export_error(&path, e)),
        }
        folders.insert(path.parent().unwrap_or(dir).to_path_buf());
    }
    folders
        .iter()
        .filter(|f| f.exists())
        .try_for_each(|f| sync_dir(f).map_err(|e| export_error(f, e)))
}
