//! Pictures of a topology for people: an indented tree for the terminal and a Graphviz graph.

use std::fmt::Write as _;

use cxl_lab_model::{Below, ByteSize, Host, Port, Topology, Type3Device};

/// A readable tree of every host: host bridges, ports, switches, devices and windows.
pub fn tree(topology: &Topology) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: {}", topology.name, topology.description);
    for host in &topology.hosts {
        let machine = &host.machine;
        let _ = writeln!(
            out,
            "{}: memory {}, maxmem {}, {} cpu(s), accel {:?}{}",
            host.name,
            ByteSize(machine.memory),
            ByteSize(machine.maxmem),
            machine.cpus,
            machine.accel,
            if machine.online_cxl_as_ram { ", CXL memory onlined as RAM (TCG)" } else { "" }
        );
        let mut items: Vec<Item> = host.host_bridges.iter().map(|host_bridge| {
            Item {
                label: format!("host bridge {} (bus_nr {}{})", host_bridge.id, host_bridge.bus_nr,
                    if host_bridge.hdm_for_passthrough { ", hdm_for_passthrough" } else { "" }),
                children: host_bridge.root_ports.iter().map(|port| port_item("root port", port)).collect(),
            }
        }).collect();
        items.extend(host.windows.iter().enumerate().map(|(index, window)| Item {
            label: format!(
                "window {index}: {}, {}-way over [{}], granularity {}",
                ByteSize(window.size),
                window.targets.len(),
                window.targets.join(", "),
                ByteSize(window.granularity)
            ),
            children: Vec::new(),
        }));
        write_items(&mut out, &items, "");
    }
    out
}

struct Item {
    label: String,
    children: Vec<Item>,
}

fn port_item(kind: &str, port: &Port) -> Item {
    let label = format!("{kind} {} (port {}, chassis {} slot {})", port.id, port.port, port.chassis, port.slot);
    let children = match &port.below {
        Some(Below::Type3(device)) => vec![Item { label: device_label(device), children: Vec::new() }],
        Some(Below::Switch(switch)) => vec![Item {
            label: format!(
                "switch {} (upstream port {}{}{})",
                switch.id,
                switch.port,
                switch.serial.map(|serial| format!(", serial {serial}")).unwrap_or_default(),
                if switch.mailbox_cci { ", mailbox CCI" } else { "" }
            ),
            children: switch.downstream_ports.iter().map(|port| port_item("downstream port", port)).collect(),
        }],
        None => Vec::new(),
    };
    Item { label, children }
}

fn device_label(device: &Type3Device) -> String {
    let mut parts = Vec::new();
    if let Some(backend) = &device.volatile {
        parts.push(format!("volatile {} [{}]", ByteSize(backend.size), backend.backend));
    }
    if let Some(backend) = &device.persistent {
        parts.push(format!("persistent {} [{}]", ByteSize(backend.size), backend.backend));
    }
    if let Some(backend) = &device.lsa {
        parts.push(format!("label area {} [{}]", ByteSize(backend.size), backend.backend));
    }
    if let Some(dc) = &device.dynamic_capacity {
        parts.push(format!("dynamic capacity {} in {} regions [{}]", ByteSize(dc.backend.size), dc.regions, dc.backend.backend));
    }
    format!("type-3 {} (serial {}): {}", device.id, device.serial, parts.join(", "))
}

fn write_items(out: &mut String, items: &[Item], indent: &str) {
    for (index, item) in items.iter().enumerate() {
        let last = index + 1 == items.len();
        let _ = writeln!(out, "{indent}{}{}", if last { "└── " } else { "├── " }, item.label);
        let child_indent = format!("{indent}{}", if last { "    " } else { "│   " });
        write_items(out, &item.children, &child_indent);
    }
}

/// A Graphviz `digraph`: one cluster per host, windows pointing at the host bridges they target.
pub fn dot(topology: &Topology) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];", topology.name);
    for (host_index, host) in topology.hosts.iter().enumerate() {
        let _ = writeln!(out, "  subgraph \"cluster_{}\" {{\n    label=\"{}\";", host.name, host.name);
        let node = |id: &str| format!("\"h{host_index}:{id}\"");
        write_host_nodes(&mut out, host, &node);
        let _ = writeln!(out, "  }}");
    }
    for backend in topology.backends.iter().filter(|backend| backend.shared) {
        let _ = writeln!(out, "  \"backend:{}\" [shape=cylinder, label=\"{}\\n{}\"];", backend.id, backend.id, ByteSize(backend.size));
        for (host_index, host) in topology.hosts.iter().enumerate() {
            for placement in host.devices() {
                let device = placement.device;
                if device.volatile.iter().chain(&device.persistent).any(|used| used.backend == backend.id) {
                    let _ = writeln!(out, "  \"h{host_index}:{}\" -> \"backend:{}\" [style=dashed];", device.id, backend.id);
                }
            }
        }
    }
    out.push_str("}\n");
    out
}

fn write_host_nodes(out: &mut String, host: &Host, node: &dyn Fn(&str) -> String) {
    for host_bridge in &host.host_bridges {
        let _ = writeln!(out, "    {} [label=\"{}\\nhost bridge, uid {}\"];", node(&host_bridge.id), host_bridge.id, host_bridge.bus_nr);
        for root_port in &host_bridge.root_ports {
            write_port(out, node, &host_bridge.id, root_port, "root port");
        }
    }
    for (index, window) in host.windows.iter().enumerate() {
        let window_id = format!("window{index}");
        let _ = writeln!(
            out,
            "    {} [shape=folder, label=\"window {index}\\n{} / {}-way / {}\"];",
            node(&window_id),
            ByteSize(window.size),
            window.targets.len(),
            ByteSize(window.granularity)
        );
        for target in &window.targets {
            let _ = writeln!(out, "    {} -> {} [style=dotted];", node(&window_id), node(target));
        }
    }
}

fn write_port(out: &mut String, node: &dyn Fn(&str) -> String, parent: &str, port: &Port, kind: &str) {
    let _ = writeln!(out, "    {} [label=\"{}\\n{kind} {}\"];", node(&port.id), port.id, port.port);
    let _ = writeln!(out, "    {} -> {};", node(parent), node(&port.id));
    match &port.below {
        Some(Below::Type3(device)) => {
            let _ = writeln!(out, "    {} [shape=component, label=\"{}\\nserial {}\"];", node(&device.id), device.id, device.serial);
            let _ = writeln!(out, "    {} -> {};", node(&port.id), node(&device.id));
        }
        Some(Below::Switch(switch)) => {
            let _ = writeln!(out, "    {} [shape=box3d, label=\"{}\\nswitch\"];", node(&switch.id), switch.id);
            let _ = writeln!(out, "    {} -> {};", node(&port.id), node(&switch.id));
            for downstream in &switch.downstream_ports {
                write_port(out, node, &switch.id, downstream, "downstream port");
            }
        }
        None => {}
    }
}
