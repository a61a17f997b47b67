using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Vnet.Configuration;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Links;

namespace Vnet.Language;

/// <summary>
/// Reads a description (grammar in docs/language.md). A hand-written recursive descent: one method
/// per statement, each reading like its grammar line, so every error can say exactly what was
/// expected where. The first error of a statement ends it; the parser skips to the statement's end
/// (its whole block, if the header was wrong) and goes on, so one run reports every statement's error.
/// When the syntax is right, <see cref="OverlayChecker"/> checks the meaning.
/// </summary>
public static class OverlayParser
{
    /// <summary>
    /// The most errors one parse reports: a file that is not a description at all (a binary, a log)
    /// would otherwise give one per line, tens of thousands, and hold them all in memory. A line
    /// after them says how many more there were.
    /// </summary>
    public const int MaxErrors = 100;

    public static ParseResult Parse(string text, string file)
    {
        ArgumentNullException.ThrowIfNull(text);
        file ??= "";
        var parser = new Parser(Lexer.Read(text, file));
        var overlay = parser.ParseOverlay();
        if (parser.Errors.Count > 0)
        {
            // A block that is never closed is found at the end of the file; report in file order.
            return ParseResult.Failed(Capped([.. parser.Errors.OrderBy(d => d.Span.Line).ThenBy(d => d.Span.Column)], parser.Dropped, file));
        }
        var problems = OverlayChecker.Check(overlay);
        if (problems.Count > 0)
        {
            // Problems of the whole description (no proxy at all) have no construct to point at.
            var start = new SourceSpan(file, 1, 1);
            var located = problems.Select(d => d.Span.IsKnown ? d : d with { Span = start }).ToList();
            return ParseResult.Failed(Capped(located.Take(MaxErrors).ToList(), Math.Max(0, located.Count - MaxErrors), file));
        }
        return ParseResult.Succeeded(overlay);
    }

    private static List<Diagnostic> Capped(List<Diagnostic> shown, int more, string file)
    {
        if (more > 0)
            shown.Add(new Diagnostic(new SourceSpan(file, 0, 0), $"{more} more error{(more == 1 ? "" : "s")} not shown (only the first {MaxErrors} are)"));
        return shown;
    }

    /// <summary>
    /// Reads an endpoint as the language writes it: <c>192.0.2.1:5500</c> or <c>[2001:db8::1]:5500</c>.
    /// Stricter than <see cref="IPEndPoint.TryParse(string, out IPEndPoint?)"/>, which takes "1:2" for
    /// 0.0.0.1 port 2 and a bare IPv6 address for port 0.
    /// </summary>
    public static bool TryParseEndpoint(string text, [NotNullWhen(true)] out IPEndPoint? endpoint, [NotNullWhen(false)] out string? problem)
    {
        ArgumentNullException.ThrowIfNull(text);
        endpoint = null;
        problem = null;
        var bad = $"'{text}' is not an endpoint: expected ADDRESS:PORT such as 192.0.2.1:5500 or [2001:db8::1]:5500";
        IPAddress? address;
        string portText;
        if (text.StartsWith('['))
        {
            var close = text.IndexOf(']', StringComparison.Ordinal);
            if (close < 0)
                return Problem(bad, out problem);
            var host = text[1..close];
            if (host.Contains('%', StringComparison.Ordinal) || !IPAddress.TryParse(host, out address) || address.AddressFamily != AddressFamily.InterNetworkV6)
                return Problem(bad, out problem);
            var rest = text[(close + 1)..];
            if (rest.Length == 0)
                return Problem($"'{text}' has no port: expected ADDRESS:PORT such as {text}:5500", out problem);
            if (rest[0] != ':')
                return Problem(bad, out problem);
            portText = rest[1..];
        }
        else
        {
            var colon = text.LastIndexOf(':');
            if (colon < 0)
                return Problem(TryParseIPv4(text, out _) ? $"'{text}' has no port: expected ADDRESS:PORT such as {text}:5500" : bad, out problem);
            if (text.IndexOf(':', StringComparison.Ordinal) != colon)
                return Problem($"'{text}' is not an endpoint: an IPv6 address goes in brackets, as in [2001:db8::1]:5500", out problem);
            if (!TryParseIPv4(text[..colon], out address))
                return Problem(bad, out problem);
            portText = text[(colon + 1)..];
        }
        if (!TryParseNumber(portText, out var port) || port is < 1 or > IPEndPoint.MaxPort)
            return Problem($"'{text}' has no valid port: expected a port from 1 to 65535 after the ':'", out problem);
        endpoint = new IPEndPoint(address!, port);
        return true;
    }

    private static bool Problem(string text, out string? problem)
    {
        problem = text;
        return false;
    }

    /// <summary>
    /// Dotted quads only: 1 to 3 decimal digits per part. No shortened forms, and no leading zeros,
    /// which some tools read as octal: "010" would mean 10 to one reader and 8 to another.
    /// </summary>
    private static bool TryParseIPv4(string text, out IPAddress? address)
    {
        address = null;
        var parts = text.Split('.');
        if (parts.Length != 4)
            return false;
        var bytes = new byte[4];
        for (var i = 0; i < 4; i++)
        {
            if (parts[i].Length is 0 or > 3 || (parts[i].Length > 1 && parts[i][0] == '0') || !TryParseNumber(parts[i], out var b) || b > 255)
                return false;
            bytes[i] = (byte)b;
        }
        address = new IPAddress(bytes);
        return true;
    }

    private static bool TryParseNumber(string text, out int value)
    {
        value = 0;
        return text.Length > 0 && text.All(char.IsAsciiDigit) && int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value);
    }

    private static bool LooksLikeMac(string word) => word.Contains(':', StringComparison.Ordinal) || word.Count(c => c == '-') >= 2;

    private sealed class Parser(List<Token> tokens)
    {
        private const string NameRule = "letters, digits, '-', '_' and '.', starting with a letter or digit, at most 32 characters";

        private int _position;

        public List<Diagnostic> Errors { get; } = [];

        /// <summary>Errors found past <see cref="MaxErrors"/>: counted, not kept.</summary>
        public int Dropped { get; private set; }

        private Token Peek => tokens[_position];

        private Token Next()
        {
            var token = tokens[_position];
            if (token.Kind != TokenKind.EndOfFile)
                _position++;
            return token;
        }

        private bool Fail(Token at, string message)
        {
            if (Errors.Count < MaxErrors)
                Errors.Add(new Diagnostic(at.Span, message));
            else
                Dropped++;
            return false;
        }

        private bool Expected(string what, Token found, string hint = "") =>
            Fail(found, $"expected {what}, found {found.Describe()}{hint}");

        public OverlayDescription ParseOverlay()
        {
            var daemons = new List<DaemonDecl>();
            var links = new List<LinkDecl>();
            while (true)
            {
                SkipLineEnds();
                var t = Peek;
                if (t.Kind == TokenKind.EndOfFile)
                    break;
                bool ok;
                if (t.Is("proxy") || t.Is("host"))
                    ok = ParseDaemon(daemons);
                else if (t.Is("link"))
                    ok = ParseLink(links);
                else if (t.Kind == TokenKind.Close)
                {
                    // Recovery stops before a '}' (it may close a block); at the top nothing does.
                    Expected("'proxy', 'host' or 'link'", Next(), " (no block is open)");
                    continue;
                }
                else
                {
                    ok = Expected("'proxy', 'host' or 'link'", t, TopLevelHint(t));
                }
                if (!ok)
                    Recover();
            }
            return new OverlayDescription(daemons, links);
        }

        private static string TopLevelHint(Token t) => t switch
        {
            { Kind: TokenKind.Open } => " (a block opens on the line of its header)",
            _ when t.Is("interface") || t.Is("rule") => $" ('{t.Text}' goes in a daemon's block)",
            _ when t.Is("vm") => " ('vm' lines go in an interface's block)",
            _ => "",
        };

        // daemon = ( "proxy" | "host" ) NAME [ "at" ENDPOINT ] [ "{" { interface | rule } "}" ]
        private bool ParseDaemon(List<DaemonDecl> daemons)
        {
            var keyword = Next();
            var role = keyword.Text == "proxy" ? DaemonRole.Proxy : DaemonRole.Host;
            if (!ExpectName($"the {keyword.Text}'s name after '{keyword.Text}'", out var name, out _))
                return false;
            IPEndPoint? address = null;
            SourceSpan addressAt = default;
            if (Peek.Is("at"))
            {
                Next();
                if (!ExpectEndpoint(out address, out addressAt))
                    return false;
            }
            var interfaces = new List<InterfaceDecl>();
            var rules = new List<RuleDecl>();
            var owner = $"{keyword.Text} {name}";
            var block = Peek.Kind == TokenKind.Open;
            if (block && !ParseBlock(owner, () => ParseDaemonItem(owner, interfaces, rules)))
                return false;
            daemons.Add(new DaemonDecl(name, role, address, interfaces, rules) { Span = keyword.Span, AddressAt = addressAt });
            return EndOfStatement(
                block ? $"the end of the line after the block of {owner}"
                : address is null ? "'at ADDRESS:PORT', '{' or the end of the line after the daemon's name"
                : "'{' or the end of the line after the daemon's address");
        }

        private bool ParseDaemonItem(string owner, List<InterfaceDecl> interfaces, List<RuleDecl> rules)
        {
            var t = Peek;
            if (t.Is("interface"))
                return ParseInterface(interfaces);
            if (t.Is("rule"))
                return ParseRule(rules);
            var hint = t.Is("vm") ? " ('vm' lines go in an interface's block)"
                : t.Is("link") ? " (links are declared outside the daemons' blocks)"
                : t.Is("proxy") || t.Is("host") ? " (daemons do not nest: is a '}' missing?)"
                : "";
            return Expected($"'interface', 'rule' or '}}' in the block of {owner}", t, hint);
        }

        // interface = "interface" NAME ( "tap" | "pcap" ) { option } [ "{" { vm } "}" ]
        private bool ParseInterface(List<InterfaceDecl> interfaces)
        {
            var keyword = Next();
            if (!ExpectName("the interface name after 'interface'", out var name, out _))
                return false;
            var kindToken = Peek;
            if (!kindToken.Is("tap") && !kindToken.Is("pcap"))
                return Expected("the interface kind 'tap' or 'pcap' after the name", kindToken);
            Next();
            var kind = kindToken.Text == "tap" ? InterfaceKind.Tap : InterfaceKind.Pcap;

            int? mtu = null;
            string? bridge = null;
            SourceSpan mtuAt = default, bridgeAt = default, lanAt = default;
            while (Peek.Kind == TokenKind.Word)
            {
                var option = Peek;
                if (option.Is("mtu"))
                {
                    if (mtu is not null)
                        return Fail(option, "'mtu' is given twice");
                    Next();
                    if (!ExpectNumber("the MTU after 'mtu'", out var value, out mtuAt))
                        return false;
                    mtu = value;
                }
                else if (option.Is("bridge"))
                {
                    if (bridge is not null)
                        return Fail(option, "'bridge' is given twice");
                    Next();
                    if (!ExpectName("the bridge name after 'bridge'", out var b, out _))
                        return false;
                    bridge = b;
                    bridgeAt = option.Span;
                }
                else if (option.Is("lan"))
                {
                    if (lanAt.IsKnown)
                        return Fail(option, "'lan' is given twice");
                    Next();
                    lanAt = option.Span;
                }
                else
                {
                    break;
                }
            }

            var vms = new List<MacAddress>();
            var vmsAt = new List<SourceSpan>();
            var block = Peek.Kind == TokenKind.Open;
            var owner = $"interface {name}";
            if (block && !ParseBlock(owner, () => ParseVm(owner, vms, vmsAt)))
                return false;
            interfaces.Add(new InterfaceDecl(name, kind, mtu, bridge, lanAt.IsKnown, vms)
            {
                Span = keyword.Span,
                MtuAt = mtuAt,
                BridgeAt = bridgeAt,
                LanAt = lanAt,
                VmsAt = vmsAt,
            });
            return EndOfStatement(block ? $"the end of the line after the block of {owner}" : "'mtu', 'bridge', 'lan', '{' or the end of the line");
        }

        // vm = "vm" MAC
        private bool ParseVm(string owner, List<MacAddress> vms, List<SourceSpan> vmsAt)
        {
            var t = Peek;
            if (!t.Is("vm"))
            {
                var hint = t.Is("interface") || t.Is("rule") ? " (is a '}' missing?)" : "";
                return Expected($"'vm' or '}}' in the block of {owner}", t, hint);
            }
            Next();
            if (!ExpectMac("the VM's MAC address after 'vm'", out var mac, out var at))
                return false;
            vms.Add(mac);
            vmsAt.Add(at);
            return EndOfStatement("the end of the line after the VM's address");
        }

        // rule = "rule" ( MAC | "any" ) "->" ( MAC | "any" | "multicast" | "none" ) [ "from" port ] ( "to" port | "flood" )
        private bool ParseRule(List<RuleDecl> rules)
        {
            var keyword = Next();
            var sourceToken = Peek;
            MacMatch source;
            if (sourceToken.Is("any"))
            {
                source = MacMatch.Any;
            }
            else if (sourceToken.Kind == TokenKind.Word && MacAddress.TryParse(sourceToken.Text, out var mac))
            {
                source = MacMatch.Exact(mac);
            }
            else
            {
                if (sourceToken.Kind == TokenKind.Word && LooksLikeMac(sourceToken.Text))
                    return NotAMac(sourceToken);
                var hint = sourceToken.Is("none") || sourceToken.Is("multicast") ? $" ('{sourceToken.Text}' matches destinations only)" : "";
                return Expected("the source MAC address or 'any' after 'rule'", sourceToken, hint);
            }
            Next();

            if (Peek.Kind != TokenKind.Arrow)
                return Expected("'->' after the source address", Peek);
            Next();

            var destinationToken = Peek;
            MacMatch destination;
            if (destinationToken.Kind == TokenKind.Word && MacMatch.TryParse(destinationToken.Text, out var d)
                && (d.Kind == MacMatchKind.Exact || destinationToken.Text is "any" or "multicast" or "none"))
            {
                destination = d;
            }
            else
            {
                if (destinationToken.Kind == TokenKind.Word && LooksLikeMac(destinationToken.Text))
                    return NotAMac(destinationToken);
                return Expected("the destination MAC address, 'any', 'multicast' or 'none' after '->'", destinationToken);
            }
            Next();

            PortRef? ingress = null;
            SourceSpan ingressAt = default;
            if (Peek.Is("from"))
            {
                Next();
                if (!ExpectPort("'from'", out var port, out ingressAt))
                    return false;
                ingress = port;
            }

            var actionToken = Peek;
            RuleAction action;
            SourceSpan actionAt;
            if (actionToken.Is("to"))
            {
                Next();
                if (!ExpectPort("'to'", out var port, out actionAt))
                    return false;
                action = RuleAction.To(port);
            }
            else if (actionToken.Is("flood"))
            {
                Next();
                action = RuleAction.Flood;
                actionAt = actionToken.Span;
            }
            else
            {
                return Expected($"'to PORT' or 'flood' after the {(ingress is null ? "destination" : "arrival port")}", actionToken);
            }

            rules.Add(new RuleDecl(source, destination, ingress, action)
            {
                Span = keyword.Span,
                SourceAt = sourceToken.Span,
                IngressAt = ingressAt,
                ActionAt = actionAt,
            });
            if (Peek.Is("from"))
                return Expected("the end of the line after the rule", Peek, " ('from PORT' goes before the action)");
            return EndOfStatement("the end of the line after the rule");
        }

        // port = ( "link" | "interface" ) NAME
        private bool ExpectPort(string after, out PortRef port, out SourceSpan at)
        {
            port = default;
            var t = Peek;
            at = t.Span;
            if (t.Is("link") || t.Is("interface"))
            {
                Next();
                if (!ExpectName($"the {t.Text} name after '{t.Text}'", out var name, out _))
                    return false;
                port = t.Text == "link" ? PortRef.Link(name) : PortRef.Interface(name);
                return true;
            }
            var hint = "";
            if (t.Kind == TokenKind.Word && PortRef.TryParse(t.Text, out var written))
                hint = $" (write '{OverlayFormatter.Port(written.Value)}')";
            else if (t.Is("if"))
                hint = " (write 'interface NAME')";
            return Expected($"'link NAME' or 'interface NAME' after {after}", t, hint);
        }

        // link = "link" NAME "->" NAME { "tcp" | "udp" | "port" NUMBER | "streams" NUMBER }
        private bool ParseLink(List<LinkDecl> links)
        {
            var keyword = Next();
            if (!ExpectName("the name of the daemon that dials, after 'link'", out var from, out var fromAt))
                return false;
            if (Peek.Kind != TokenKind.Arrow)
                return Expected("'->' after the name of the daemon that dials", Peek);
            Next();
            if (!ExpectName("the name of the daemon dialed, after '->'", out var to, out var toAt))
                return false;

            LinkTransport? transport = null;
            int? port = null;
            SourceSpan portAt = default;
            int? streams = null;
            SourceSpan streamsAt = default;
            while (Peek.Kind == TokenKind.Word)
            {
                var option = Peek;
                if (option.Is("tcp") || option.Is("udp"))
                {
                    if (transport is not null)
                        return Fail(option, "the transport is given twice");
                    Next();
                    transport = option.Text == "udp" ? LinkTransport.Udp : LinkTransport.Tcp;
                }
                else if (option.Is("port"))
                {
                    if (port is not null)
                        return Fail(option, "'port' is given twice");
                    Next();
                    if (!ExpectNumber("the port number after 'port'", out var value, out portAt))
                        return false;
                    port = value;
                }
                else if (option.Is("streams"))
                {
                    if (streams is not null)
                        return Fail(option, "'streams' is given twice");
                    Next();
                    if (!ExpectNumber("the number of streams after 'streams'", out var value, out streamsAt))
                        return false;
                    streams = value;
                }
                else
                {
                    break;
                }
            }
            links.Add(new LinkDecl(from, to, transport ?? LinkTransport.Tcp, port, streams ?? 1)
            {
                Span = keyword.Span,
                FromAt = fromAt,
                ToAt = toAt,
                PortAt = portAt,
                StreamsAt = streamsAt,
            });
            return EndOfStatement("'tcp', 'udp', 'port', 'streams' or the end of the line after the link");
        }

        private bool ParseBlock(string owner, Func<bool> parseItem)
        {
            var open = Next();
            while (true)
            {
                SkipLineEnds();
                var t = Peek;
                if (t.Kind == TokenKind.Close)
                {
                    Next();
                    return true;
                }
                if (t.Kind == TokenKind.EndOfFile)
                    return Fail(open, $"expected '}}' to close the block of {owner} opened here, found the end of the file");
                if (!parseItem())
                    Recover();
            }
        }

        /// <summary>A statement ends at a line end (consumed), or before the '}' of its block or the end of the file.</summary>
        private bool EndOfStatement(string expected)
        {
            var t = Peek;
            if (t.Kind == TokenKind.EndOfLine)
            {
                Next();
                return true;
            }
            return t.Kind is TokenKind.Close or TokenKind.EndOfFile || Expected(expected, t);
        }

        /// <summary>
        /// Skips the rest of a statement that failed: to the end of its line, past any block that
        /// opens on it, or up to the '}' of the block it is in, which that block then reads.
        /// </summary>
        private void Recover()
        {
            var depth = 0;
            while (true)
            {
                var t = Peek;
                switch (t.Kind)
                {
                    case TokenKind.EndOfFile:
                        return;
                    case TokenKind.EndOfLine when depth == 0:
                        Next();
                        return;
                    case TokenKind.Close when depth == 0:
                        return;
                    case TokenKind.Open:
                        depth++;
                        break;
                    case TokenKind.Close:
                        depth--;
                        break;
                    default:
                        break;
                }
                Next();
            }
        }

        private void SkipLineEnds()
        {
            while (Peek.Kind == TokenKind.EndOfLine)
                Next();
        }

        private bool ExpectName(string what, out string name, out SourceSpan at)
        {
            var t = Peek;
            name = t.Text;
            at = t.Span;
            if (t.Kind == TokenKind.Word && Names.IsValid(t.Text))
            {
                Next();
                return true;
            }
            if (t.Kind == TokenKind.Word)
                return Fail(t, $"expected {what}, found '{t.Text}', which is not a name ({NameRule})");
            return Expected(what, t);
        }

        private bool ExpectMac(string what, out MacAddress mac, out SourceSpan at)
        {
            var t = Peek;
            at = t.Span;
            mac = default;
            if (t.Kind == TokenKind.Word && MacAddress.TryParse(t.Text, out mac))
            {
                Next();
                return true;
            }
            if (t.Kind == TokenKind.Word && LooksLikeMac(t.Text))
                return NotAMac(t);
            return Expected(what, t);
        }

        private bool NotAMac(Token t) =>
            Fail(t, $"'{t.Text}' is not a MAC address: expected six pairs of hex digits such as 02:00:00:00:00:01");

        private bool ExpectEndpoint(out IPEndPoint? endpoint, out SourceSpan at)
        {
            var t = Peek;
            at = t.Span;
            endpoint = null;
            if (t.Kind != TokenKind.Word)
                return Expected("the daemon's ADDRESS:PORT after 'at'", t);
            if (!TryParseEndpoint(t.Text, out endpoint, out var problem))
                return Fail(t, problem);
            Next();
            return true;
        }

        private bool ExpectNumber(string what, out int value, out SourceSpan at)
        {
            var t = Peek;
            at = t.Span;
            value = 0;
            if (t.Kind == TokenKind.Word && TryParseNumber(t.Text, out value))
            {
                Next();
                return true;
            }
            if (t.Kind == TokenKind.Word && t.Text.All(char.IsAsciiDigit))
                return Fail(t, $"expected {what}, found '{t.Text}', which is too large");
            return Expected(what, t);
        }
    }
}
