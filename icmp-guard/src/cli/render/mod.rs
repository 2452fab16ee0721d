//! Every table, watch view, log line and JSON document the commands print.

pub mod diff;
pub mod events;
pub mod human;
pub mod kernel_view;
pub mod policy;
pub mod stats;
pub mod status;
pub mod top;

/// The local wall-clock time as HH:MM:SS.
pub fn clock() -> String {
    // SAFETY: time and localtime_r write only into values we own.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return String::from("--:--:--");
        }
        format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_has_three_fields() {
        let clock = clock();
        assert_eq!(clock.len(), 8, "{clock}");
        assert_eq!(clock.matches(':').count(), 2, "{clock}");
    }
}
