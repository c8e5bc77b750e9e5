//! Whether this host can boot a smolvm microVM, and why not in one line.
//!
//! `/dev/kvm` opening is not enough: a nested PVM host (`kvm_pvm`, software nesting with no
//! VT-x/AMD-V) hands out a `/dev/kvm` on which a real-mode test program runs, while libkrun's
//! guest kernel dies with `KVM_EXIT_INTERNAL_ERROR` (see the smolvm notes). So the probe looks
//! at what backs `/dev/kvm`, and a boot failure is explained by the same facts.

use crate::engine::Engine;
use bottle_driver_sdk::Probe;
use std::path::Path;

/// The facts the probe reads, from `/dev`, `/sys/module` and `/proc/cpuinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// `/dev/kvm` exists.
    pub kvm_device: bool,
    /// It opens read-write for this process.
    pub kvm_opens: bool,
    /// Loaded KVM modules (`kvm_intel`, `kvm_amd`, `kvm_pvm`, …).
    pub kvm_modules: Vec<String>,
    /// The CPU shows `vmx` or `svm`.
    pub hw_virt: bool,
    /// The machine is aarch64 (where KVM needs no such flag).
    pub aarch64: bool,
}

impl HostFacts {
    /// Read them off this host.
    pub fn read() -> HostFacts {
        let kvm = Path::new("/dev/kvm");
        let kvm_modules = ["kvm_intel", "kvm_amd", "kvm_pvm"]
            .into_iter()
            .filter(|m| Path::new("/sys/module").join(m).exists())
            .map(str::to_owned)
            .collect();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        HostFacts {
            kvm_device: kvm.exists(),
            kvm_opens: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(kvm)
                .is_ok(),
            kvm_modules,
            hw_virt: cpuinfo
                .lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm")),
            aarch64: cfg!(target_arch = "aarch64"),
        }
    }

    /// Why a microVM cannot boot here, if these facts say so.
    pub fn cannot_boot(&self) -> Option<String> {
        if !self.kvm_device {
            return Some(
                "there is no /dev/kvm (no KVM in this kernel, or not passed into this container)"
                    .into(),
            );
        }
        if !self.kvm_opens {
            return Some("/dev/kvm does not open for this user: add the user to the kvm group (or give /dev/kvm mode 0660 to group kvm)".into());
        }
        let hw = ["kvm_intel", "kvm_amd"]
            .iter()
            .any(|m| self.kvm_modules.iter().any(|k| k == m));
        if self.kvm_modules.iter().any(|k| k == "kvm_pvm") && !hw {
            return Some("/dev/kvm is nested PVM (kvm_pvm) with no VT-x/AMD-V underneath: it emulates the guest kernel, and libkrun guests die with KVM_EXIT_INTERNAL_ERROR".into());
        }
        if !self.hw_virt && !self.aarch64 && !hw {
            return Some(
                "the CPU shows no VT-x/AMD-V (vmx/svm) and no kvm_intel/kvm_amd is loaded".into(),
            );
        }
        None
    }
}

/// The probe: the engine is there ([`Engine::locate`] already checked) and the host facts
/// allow a boot.
pub fn probe(engine: &Engine) -> Probe {
    let facts = HostFacts::read();
    match facts.cannot_boot() {
        Some(why) => Probe {
            can_run: false,
            reason: format!("this host cannot run microVMs: {why}"),
        },
        None => Probe {
            can_run: true,
            reason: format!(
                "smolvm {} and hardware KVM ({})",
                engine.version,
                facts.kvm_modules.join(", ")
            ),
        },
    }
}

/// One line for a failed `machine start`: what the host facts say, else what smolvm said.
pub fn explain_boot_failure(engine_message: &str, facts: &HostFacts) -> String {
    // One line: smolvm's message carries the VMM's log lines.
    let short: String = engine_message
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(300)
        .collect();
    if engine_message.contains("KvmOpen(Error(13))") {
        return format!(
            "this host cannot run microVMs: smolvm's per-VM users cannot open /dev/kvm (EACCES): give /dev/kvm to a kvm group (root:kvm 0660), or set SMOLVM_VM_UID_DROP=off to run VMs as your user (smolvm: {short})"
        );
    }
    match facts.cannot_boot() {
        Some(why) => format!("this host cannot run microVMs: {why} (smolvm: {short})"),
        None => format!("the agent's microVM did not boot (smolvm: {short})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(modules: &[&str], hw_virt: bool) -> HostFacts {
        HostFacts {
            kvm_device: true,
            kvm_opens: true,
            kvm_modules: modules.iter().map(|m| (*m).to_owned()).collect(),
            hw_virt,
            aarch64: false,
        }
    }

    #[test]
    fn nested_pvm_is_named_and_hardware_kvm_passes() {
        let pvm = facts(&["kvm_pvm"], false).cannot_boot().unwrap();
        assert!(pvm.contains("nested PVM (kvm_pvm)"), "{pvm}");
        assert_eq!(facts(&["kvm_intel"], true).cannot_boot(), None);
        assert_eq!(facts(&["kvm_intel", "kvm_pvm"], true).cannot_boot(), None);
        let none = HostFacts::default().cannot_boot().unwrap();
        assert!(none.contains("no /dev/kvm"), "{none}");
    }

    #[test]
    fn boot_failures_are_one_line_that_starts_with_the_verdict() {
        let line = explain_boot_failure(
            "start machine: … KVM_EXIT_INTERNAL_ERROR …",
            &facts(&["kvm_pvm"], false),
        );
        assert!(line.starts_with("this host cannot run microVMs: /dev/kvm is nested PVM"));
        assert_eq!(line.lines().count(), 1);
        let eacces = explain_boot_failure(
            "KvmContext(KvmOpen(Error(13)))",
            &facts(&["kvm_intel"], true),
        );
        assert!(eacces.contains("SMOLVM_VM_UID_DROP=off"), "{eacces}");
    }
}
