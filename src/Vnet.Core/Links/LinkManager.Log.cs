using Microsoft.Extensions.Logging;

namespace Vnet.Links;

public sealed partial class LinkManager
{
    private static partial class Log
    {
        [LoggerMessage(EventId = 100, Level = LogLevel.Information, Message = "Listening on TCP and UDP {EndPoint}")]
        public static partial void Listening(ILogger logger, System.Net.IPEndPoint endPoint);

        [LoggerMessage(EventId = 101, Level = LogLevel.Information, Message = "Link {Peer} up over {Transport} ({Remote}, session {Session:x8})")]
        public static partial void LinkUp(ILogger logger, string peer, LinkTransport transport, string remote, uint session);

        [LoggerMessage(EventId = 102, Level = LogLevel.Warning, Message = "Link {Peer} down: {Reason}")]
        public static partial void LinkDown(ILogger logger, string peer, string reason);

        [LoggerMessage(EventId = 103, Level = LogLevel.Warning, Message = "Rejected peer {Remote}: {Reason}")]
        public static partial void Rejected(ILogger logger, string remote, string reason);

        [LoggerMessage(EventId = 104, Level = LogLevel.Information, Message = "Dialing {Peer} at {Address} failed: {Reason}; next try in {DelayMs} ms")]
        public static partial void DialFailed(ILogger logger, string peer, System.Net.IPEndPoint address, string reason, int delayMs);

        [LoggerMessage(EventId = 106, Level = LogLevel.Information, Message = "Remote control from {Remote} ({Tool})")]
        public static partial void ToolConnected(ILogger logger, string remote, string tool);

        [LoggerMessage(EventId = 107, Level = LogLevel.Warning,
            Message = "{Peer} refuses this daemon's handshakes as older than the last it took from this key: this machine's clock is behind (it jumped back). Fix the clock, or wait until it passes the old time, or restart {Peer} ({Suppressed} more such lines not logged before this one)")]
        public static partial void ClockBehind(ILogger logger, string peer, long suppressed);

        [LoggerMessage(EventId = 108, Level = LogLevel.Information, Message = "Link {Peer} stream {Stream} up ({Remote}, session {Session:x8})")]
        public static partial void StreamUp(ILogger logger, string peer, int stream, string remote, uint session);

        [LoggerMessage(EventId = 109, Level = LogLevel.Information, Message = "Link {Peer} stream {Stream} down: {Reason}")]
        public static partial void StreamDown(ILogger logger, string peer, int stream, string reason);

        [LoggerMessage(EventId = 110, Level = LogLevel.Debug, Message = "Dialing stream {Stream} of {Peer} failed: {Reason}; next try in {DelayMs} ms")]
        public static partial void StreamDialFailed(ILogger logger, string peer, int stream, string reason, int delayMs);

        [LoggerMessage(EventId = 112, Level = LogLevel.Information,
            Message = "Link {Peer} stream {Stream}: the peer's stream socket {Target} does not answer (a firewall or port forward for the daemon's port only?); the stream's datagrams go to the peer's daemon port")]
        public static partial void StreamOnDaemonPort(ILogger logger, string peer, int stream, System.Net.IPEndPoint target);

        [LoggerMessage(EventId = 105, Level = LogLevel.Debug, Message = "Link {Peer} replaced an older session")]
        public static partial void Replaced(ILogger logger, string peer);

        [LoggerMessage(EventId = 111, Level = LogLevel.Error, Message = "The link clock failed")]
        public static partial void ClockFailed(ILogger logger, Exception error);
    }
}
