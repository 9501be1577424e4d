"""``netmgr plugin ls``: the remote plugins the daemon finds, their address, capabilities and health."""

from __future__ import annotations

from netmgr.cli.output import print_list

PLUGIN_COLUMNS = [("NAME", "{{.Name}}"), ("ADDRESS", "{{.Address}}"), ("PROVIDES", "{{.Provides}}"),
                  ("SCOPE", "{{.Scope}}"), ("HEALTH", "{{.Health}}"), ("NETWORKS", "{{.Networks}}")]
PLUGIN_HEADERS = {"Name": "NAME", "Address": "ADDRESS", "Provides": "PROVIDES", "Scope": "SCOPE",
                  "Health": "HEALTH", "Networks": "NETWORKS", "Description": "DESCRIPTION", "Error": "ERROR"}


def register(sub) -> None:
    """Add ``plugin`` and ``plugin ls``."""
    plugin = sub.add_parser("plugin", help="remote driver plugins")
    psub = plugin.add_subparsers(dest="plugin_command")
    plugin.set_defaults(func=lambda a, c: (plugin.print_help(), 0)[1])
    ls = psub.add_parser("ls", aliases=["list"], help="list plugins, their address, capabilities and health")
    ls.add_argument("-q", "--quiet", action="store_true", help="only names")
    ls.add_argument("--format", default=None, help="json, table TEMPLATE or a Go template")
    ls.set_defaults(func=list_)


def plugin_row(doc: dict) -> dict:
    """The fields of one ``plugin ls`` row (strings, as Docker's rows)."""
    return {
        "Name": doc.get("Name", ""),
        "Address": doc.get("Address", "") or "-",
        "Provides": ",".join(doc.get("Implements") or []) or "-",
        "Scope": doc.get("Scope") or "-",
        "Health": doc.get("Health", ""),
        "Networks": str(doc.get("Networks", 0)),
        "Description": doc.get("Description", ""),
        "Error": doc.get("Error", ""),
    }


def list_(args, client) -> int:
    from netmgr.proto.gen import netmgr_v1_netmgr_pb2 as pb

    docs = client().documents("PluginList", pb.Empty())
    print_list(args.format, [plugin_row(d) for d in docs], PLUGIN_COLUMNS, PLUGIN_HEADERS, quiet_field="Name",
               quiet=args.quiet)
    return 0
