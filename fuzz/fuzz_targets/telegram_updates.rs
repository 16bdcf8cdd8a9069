//! The Bot API's `getUpdates` result as the bot reads it: the updates, then
//! the command in each message's text.
#![no_main]

use doorbell::notify::telegram::api::parse_updates;
use doorbell::notify::telegram::bot::BotCommand;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(updates) = parse_updates(data) {
        for u in updates {
            if let Some(text) = u.text.as_deref() {
                let _ = BotCommand::parse(text);
            }
        }
    }
});
