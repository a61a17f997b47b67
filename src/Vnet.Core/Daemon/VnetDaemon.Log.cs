using System.Net;
using Microsoft.Extensions.Logging;
using Vnet.Configuration;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Links;

namespace Vnet.Daemon;

public sealed partial class VnetDaemon
{
    private static partial class Log
    {
        [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "Daemon {Name} started as {Role} on {Listen}")]
        public static partial void Started(ILogger logger, string name, DaemonRole role, IPEndPoint listen);

        [LoggerMessage(EventId = 2, Level = LogLevel.Information, Message = "Daemon {Name} stopped")]
        public static partial void Stopped(ILogger logger, string name);

        [LoggerMessage(EventId = 4, Level = LogLevel.Debug, Message = "Stopping {Part}")]
        public static partial void Stopping(ILogger logger, string part);

        [LoggerMessage(EventId = 3, Level = LogLevel.Error, Message = "Control-plane error")]
        public static partial void ControlError(ILogger logger, Exception exception);

        [LoggerMessage(EventId = 10, Level = LogLevel.Information, Message = "Interface {Name} open ({Kind}, MTU {Mtu}, offloads {Offloads})")]
        public static partial void InterfaceOpened(ILogger logger, string name, InterfaceKind kind, int mtu, bool offloads);

        [LoggerMessage(EventId = 11, Level = LogLevel.Warning, Message = "Interface {Name} closed: {Reason}")]
        public static partial void InterfaceClosed(ILogger logger, string name, string reason);

        [LoggerMessage(EventId = 12, Level = LogLevel.Warning, Message = "Cannot update the filter of {Name}: {Reason}")]
        public static partial void FilterFailed(ILogger logger, string name, string reason);

        [LoggerMessage(EventId = 20, Level = LogLevel.Information, Message = "VM {Mac} appeared on {Interface}")]
        public static partial void VmLearned(ILogger logger, MacAddress mac, string @interface);

        [LoggerMessage(EventId = 21, Level = LogLevel.Information, Message = "VM {Mac} moved away to {Daemon}")]
        public static partial void VmMovedAway(ILogger logger, MacAddress mac, string daemon);

        [LoggerMessage(EventId = 22, Level = LogLevel.Information, Message = "VM {Mac} is on {Daemon}")]
        public static partial void VmLocated(ILogger logger, MacAddress mac, string daemon);

        [LoggerMessage(EventId = 23, Level = LogLevel.Information, Message = "VM {Mac} moved from {From} to {To}")]
        public static partial void VmMoved(ILogger logger, MacAddress mac, string from, string to);

        [LoggerMessage(EventId = 24, Level = LogLevel.Information, Message = "VM {Mac} left {Daemon}")]
        public static partial void VmGone(ILogger logger, MacAddress mac, string daemon);

        [LoggerMessage(EventId = 30, Level = LogLevel.Warning, Message = "Bad control message from {Peer}: {Reason}")]
        public static partial void BadControl(ILogger logger, string peer, string reason);

        [LoggerMessage(EventId = 31, Level = LogLevel.Warning, Message = "Ignored {Type} from {Peer}: {Reason}")]
        public static partial void IgnoredControl(ILogger logger, string peer, string type, string reason);

        [LoggerMessage(EventId = 40, Level = LogLevel.Information, Message = "Link {Peer} added ({Address}, {Transport})")]
        public static partial void LinkAdded(ILogger logger, string peer, IPEndPoint address, LinkTransport transport);

        [LoggerMessage(EventId = 41, Level = LogLevel.Information, Message = "Link {Peer} removed")]
        public static partial void LinkRemoved(ILogger logger, string peer);

        [LoggerMessage(EventId = 42, Level = LogLevel.Information, Message = "Rule {Id} added: {Rule}")]
        public static partial void RuleAdded(ILogger logger, long id, Rule rule);

        [LoggerMessage(EventId = 44, Level = LogLevel.Information, Message = "Links to {Peer} now emulate {Emulation}")]
        public static partial void EmulationSet(ILogger logger, string peer, string emulation);

        [LoggerMessage(EventId = 61, Level = LogLevel.Information, Message = "Adaptation {How} at {Daemon}: {Change} ({Reason})")]
        public static partial void Adapted(ILogger logger, string how, string daemon, string change, string reason);

        [LoggerMessage(EventId = 60, Level = LogLevel.Information, Message = "Topology change {Id}: {Edges} edges; added [{Added}] removed [{Removed}]")]
        public static partial void TopologyChanged(ILogger logger, long id, int edges, IReadOnlyList<Inference.VmPair> added, IReadOnlyList<Inference.VmPair> removed);

        [LoggerMessage(EventId = 50, Level = LogLevel.Information, Message = "Applied a change set of {Count} changes")]
        public static partial void Applied(ILogger logger, int count);

        [LoggerMessage(EventId = 51, Level = LogLevel.Warning, Message = "Change set refused at '{Change}': {Reason}")]
        public static partial void ApplyFailed(ILogger logger, string change, string reason);

        [LoggerMessage(EventId = 43, Level = LogLevel.Information, Message = "Rule {Id} removed")]
        public static partial void RuleRemoved(ILogger logger, long id);
    }
}
