//! `holdfast settings`: every setting with its default and meaning.

use holdfast_actors::core::settings;

pub(crate) fn run(markdown: bool) {
    if markdown {
        print!("{}", settings::settings_markdown());
    } else {
        for (name, default, doc) in settings::SETTINGS_DOC {
            println!("{name} = {default}\n    {doc}");
        }
    }
}
