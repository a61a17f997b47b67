using Microsoft.Extensions.Logging;
using Vnet.Frames;
using Vnet.Peers;

namespace Vnet.Vms;

public sealed partial class VmDirectory
{
    private static partial class Log
    {
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

        [LoggerMessage(EventId = 25, Level = LogLevel.Warning,
            Message = "Repair: the {Topic} map from {Peer} is wrong here ({Kind}); asking for a snapshot (a repair in a healthy run is a bug)")]
        public static partial void Repair(ILogger logger, MapTopic topic, string peer, RepairKind kind);

        [LoggerMessage(EventId = 26, Level = LogLevel.Information, Message = "{Peer} asked for a snapshot of the {Topic} map ({Reason})")]
        public static partial void SyncAsked(ILogger logger, string peer, MapTopic topic, string reason);

        [LoggerMessage(EventId = 27, Level = LogLevel.Information, Message = "{Count} more snapshot requests in the last minute were not logged")]
        public static partial void SyncAskedSuppressed(ILogger logger, long count);
    }
}
