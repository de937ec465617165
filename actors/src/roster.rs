//! Which core runs for each actor kind: the one factory every host uses,
//! so that the simulator and the production node start the same cores
//! with the same wiring.

use crate::archiving::archiver::Archiver;
use crate::archiving::database::Database;
use crate::archiving::destination_queue::DestinationQueue;
use crate::archiving::front_end::FrontEnd;
use crate::archiving::outgoing_queue::OutgoingQueue;
use crate::chat::channel::Channel;
use crate::chat::chat_store::ChatStore;
use crate::chat::lookup::Lookup;
use crate::chat::pool::ChatPool;
use crate::chat::web_files::WebFiles;
use crate::compliance::service::Compliance;
use crate::core::actor::Actor;
use crate::core::cluster::Cluster;
use crate::core::ids::ActorKind;
use crate::core::reactor::Cores;
use crate::core::settings::{Sabotage, Settings};
use std::sync::Arc;

/// What a node's cores are built from.
#[derive(Clone)]
pub struct Roster {
    pub node: String,
    pub cluster: Arc<Cluster>,
    pub settings: Settings,
    /// The group chat pool (empty without Channel servers).
    pub pool: Arc<ChatPool>,
    /// Deliberate bugs for the simulator's checkers to find; production
    /// passes the default (none).
    pub sabotage: Sabotage,
}

impl Cores for Roster {
    fn core(&self, kind: ActorKind) -> Box<dyn Actor> {
        let n = self.node.clone();
        let c = self.cluster.clone();
        let s = self.settings.clone();
        let pool = &self.pool;
        let sabotage = &self.sabotage;
        match kind {
            ActorKind::FrontEnd => Box::new(FrontEnd::new(n, c, s).sabotaged(sabotage)),
            ActorKind::OutgoingQueue => Box::new(OutgoingQueue::new(n, c, s)),
            ActorKind::DestinationQueue => Box::new(DestinationQueue::new(n, c, s)),
            ActorKind::Archiver => Box::new(Archiver::new(n, c, s).sabotaged(sabotage)),
            ActorKind::Database => Box::new(Database::new(n, sabotage.clone()).with_settings(&s)),
            ActorKind::Lookup => Box::new(Lookup::new(n, pool.clone(), s)),
            ActorKind::Channel if sabotage.no_relay => {
                Box::new(Channel::new(n, pool.clone(), s).without_relay())
            }
            ActorKind::Channel => Box::new(Channel::new(n, pool.clone(), s)),
            ActorKind::ChatStore => Box::new(
                ChatStore::new(n, pool.rooms.clone())
                    .with_compliance(pool.compliance.clone())
                    .with_settings(&s)
                    .sabotaged(sabotage),
            ),
            ActorKind::Web => {
                Box::new(WebFiles::new(n, pool.clone(), s).with_compliance(pool.compliance.clone()))
            }
            ActorKind::Compliance => {
                let mut c = Compliance::new(n, pool.export.clone(), s.compliance_interval);
                if sabotage.compliance_delete_first {
                    c = c.deleting_first();
                }
                if sabotage.compliance_skip_files {
                    c = c.skipping_files();
                }
                if sabotage.compliance_delete_unpicked {
                    c = c.deleting_unpicked();
                }
                Box::new(c)
            }
            ActorKind::Client => unreachable!("clients are not hosted by server nodes"),
        }
    }
}
