//! Specs of the cluster, node, storage, task, access and network endpoints.

use super::formats::Named;
use super::{Endpoint, Method, Op, P, Pattern};

fn node() -> P {
    P::string("node").required().named(Named::PveNode)
}

fn storage() -> P {
    P::string("storage").required().named(Named::PveStorageId)
}

fn upid() -> P {
    P::string("upid").required()
}

fn userid() -> P {
    P::string("userid")
        .required()
        .named(Named::PveUserid)
        .max_len(64)
}

fn tokenid() -> P {
    P::string("tokenid").required().pattern(Pattern::TokenId)
}

fn vmid_opt() -> P {
    P::int("vmid")
        .named(Named::PveVmid)
        .min(100)
        .max(999_999_999)
}

fn iface() -> P {
    P::string("iface")
        .required()
        .named(Named::PveIface)
        .min_len(2)
        .max_len(20)
}

const IFACE_TYPES: &[&str] = &[
    "bridge",
    "bond",
    "eth",
    "alias",
    "vlan",
    "OVSBridge",
    "OVSBond",
    "OVSPort",
    "OVSIntPort",
    "vnet",
    "unknown",
];

const IFACE_FILTER_TYPES: &[&str] = &[
    "bridge",
    "bond",
    "eth",
    "alias",
    "vlan",
    "OVSBridge",
    "OVSBond",
    "OVSPort",
    "OVSIntPort",
    "vnet",
    "any_bridge",
    "any_local_bridge",
];

/// The keys of a node's config (`PVE::NodeConfig`'s schema in 8.4), the
/// values `GET /nodes/{node}/config?property=` takes.
const NODE_CONFIG_KEYS: &[&str] = &[
    "acme",
    "acmedomain0",
    "acmedomain1",
    "acmedomain2",
    "acmedomain3",
    "acmedomain4",
    "acmedomain5",
    "ballooning-target",
    "description",
    "startall-onboot-delay",
    "wakeonlan",
];

pub(super) fn endpoints() -> Vec<Endpoint> {
    use Method::*;
    vec![
        Endpoint::new(Get, "/version", Op::Version, vec![]),
        Endpoint::new(
            Get,
            "/access/permissions",
            Op::Permissions,
            vec![P::string("path")],
        ),
        Endpoint::new(Get, "/nodes", Op::Nodes, vec![]),
        Endpoint::new(Get, "/nodes/{node}/status", Op::NodeStatus, vec![node()]),
        Endpoint::new(
            Get,
            "/nodes/{node}/config",
            Op::NodeConfigGet,
            vec![node(), P::string("property").enumeration(NODE_CONFIG_KEYS)],
        ),
        Endpoint::new(
            Put,
            "/nodes/{node}/config",
            Op::NodeConfigPut,
            vec![
                node(),
                P::string("description").max_len(65536),
                P::string("digest").max_len(40),
                P::string("delete").named(Named::PveConfigidList),
            ],
        ),
        Endpoint::new(
            Get,
            "/cluster/resources",
            Op::ClusterResources,
            vec![P::string("type").enumeration(&["vm", "storage", "node", "sdn"])],
        ),
        Endpoint::new(Get, "/cluster/nextid", Op::NextId, vec![vmid_opt()]),
        Endpoint::new(
            Get,
            "/nodes/{node}/storage",
            Op::StorageList,
            vec![
                node(),
                P::string("content").named(Named::PveStorageContentList),
                P::bool("enabled"),
                P::bool("format"),
                P::string("storage").named(Named::PveStorageId),
                P::string("target").named(Named::PveNode),
            ],
        ),
        Endpoint::new(
            Get,
            "/nodes/{node}/storage/{storage}/status",
            Op::StorageStatus,
            vec![node(), storage()],
        ),
        Endpoint::new(
            Get,
            "/nodes/{node}/storage/{storage}/content",
            Op::StorageContent,
            vec![
                node(),
                storage(),
                P::string("content").named(Named::PveStorageContent),
                vmid_opt(),
            ],
        ),
        Endpoint::new(
            Post,
            "/nodes/{node}/storage/{storage}/download-url",
            Op::DownloadUrl,
            vec![
                node(),
                storage(),
                P::string("url").required().pattern(Pattern::HttpUrl),
                P::string("content")
                    .required()
                    .named(Named::PveStorageContent)
                    .enumeration(&["iso", "vztmpl", "import"]),
                P::string("filename").required().max_len(255),
                P::string("checksum").requires("checksum-algorithm"),
                P::string("checksum-algorithm")
                    .enumeration(&["md5", "sha1", "sha224", "sha256", "sha384", "sha512"])
                    .requires("checksum"),
                P::bool("verify-certificates"),
            ],
        ),
        Endpoint::new(
            Get,
            "/nodes/{node}/tasks",
            Op::TaskList,
            vec![
                node(),
                P::bool("errors"),
                P::int("limit").min(0),
                P::int("since"),
                P::string("source").enumeration(&["archive", "active", "all"]),
                P::int("start").min(0),
                P::string("typefilter"),
                P::int("until"),
                P::string("userfilter"),
                vmid_opt(),
            ],
        ),
        Endpoint::new(
            Get,
            "/nodes/{node}/tasks/{upid}",
            Op::TaskIndex,
            vec![node(), upid()],
        ),
        Endpoint::new(
            Delete,
            "/nodes/{node}/tasks/{upid}",
            Op::TaskStop,
            vec![node(), upid()],
        ),
        Endpoint::new(
            Get,
            "/nodes/{node}/tasks/{upid}/status",
            Op::TaskStatus,
            vec![node(), upid()],
        ),
        Endpoint::new(
            Get,
            "/nodes/{node}/tasks/{upid}/log",
            Op::TaskLog,
            vec![
                node(),
                upid(),
                P::int("start").min(0),
                P::int("limit").min(0),
                P::bool("download"),
            ],
        ),
        Endpoint::new(Get, "/access/ticket", Op::TicketGet, vec![]).without_auth(),
        Endpoint::new(
            Post,
            "/access/ticket",
            Op::TicketPost,
            vec![
                P::string("username").required().max_len(64),
                P::string("password").required(),
                P::string("realm").named(Named::PveRealm).max_len(32),
                P::string("otp"),
                P::bool("new-format"),
            ],
        )
        .without_auth(),
        Endpoint::new(
            Get,
            "/access/users/{userid}/token",
            Op::TokenList,
            vec![userid()],
        ),
        Endpoint::new(
            Get,
            "/access/users/{userid}/token/{tokenid}",
            Op::TokenGet,
            vec![userid(), tokenid()],
        ),
        Endpoint::new(
            Post,
            "/access/users/{userid}/token/{tokenid}",
            Op::TokenCreate,
            vec![
                userid(),
                tokenid(),
                P::string("comment"),
                P::int("expire").min(0),
                P::bool("privsep"),
            ],
        ),
        Endpoint::new(
            Put,
            "/access/users/{userid}/token/{tokenid}",
            Op::TokenUpdate,
            vec![
                userid(),
                tokenid(),
                P::string("comment"),
                P::int("expire").min(0),
                P::bool("privsep"),
            ],
        ),
        Endpoint::new(
            Delete,
            "/access/users/{userid}/token/{tokenid}",
            Op::TokenDelete,
            vec![userid(), tokenid()],
        ),
        Endpoint::new(
            Get,
            "/nodes/{node}/network",
            Op::NetworkList,
            vec![node(), P::string("type").enumeration(IFACE_FILTER_TYPES)],
        ),
        Endpoint::new(
            Post,
            "/nodes/{node}/network",
            Op::NetworkCreate,
            vec![
                node(),
                iface(),
                P::string("type").required().enumeration(IFACE_TYPES),
                P::string("address").named(Named::Ipv4).requires("netmask"),
                P::string("netmask")
                    .named(Named::Ipv4Mask)
                    .requires("address"),
                P::string("cidr").named(Named::CidrV4),
                P::string("gateway").named(Named::Ipv4),
                P::string("address6")
                    .named(Named::Ipv6)
                    .requires("netmask6"),
                P::int("netmask6").min(0).max(128).requires("address6"),
                P::string("cidr6").named(Named::CidrV6),
                P::string("gateway6").named(Named::Ipv6),
                P::bool("autostart"),
                P::string("bridge_ports").named(Named::PveIfaceList),
                P::bool("bridge_vlan_aware"),
                P::string("comments"),
                P::int("mtu").min(1280).max(65520),
            ],
        ),
        Endpoint::new(Put, "/nodes/{node}/network", Op::NetworkApply, vec![node()]),
        Endpoint::new(
            Delete,
            "/nodes/{node}/network",
            Op::NetworkRevert,
            vec![node()],
        ),
        Endpoint::new(
            Get,
            "/nodes/{node}/network/{iface}",
            Op::NetworkIfaceGet,
            vec![node(), iface()],
        ),
        Endpoint::new(
            Delete,
            "/nodes/{node}/network/{iface}",
            Op::NetworkIfaceDelete,
            vec![node(), iface()],
        ),
    ]
}
