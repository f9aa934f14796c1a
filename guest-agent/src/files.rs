//! File push/pull over the agent port.

use flotilla_agent::proto::Frame;

use crate::server::Outbox;

/// File transfers in progress, by stream id.
#[derive(Default)]
pub struct Transfers {}

impl Transfers {
    pub fn dispatch(&mut self, frame: Frame, out: &Outbox) {
        out.send(
            out.current_gen(),
            Frame::error(frame.stream, "file transfer is not implemented yet"),
        );
    }

    pub fn clear(&mut self) {}
}
