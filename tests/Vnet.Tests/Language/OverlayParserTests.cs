using System.Net;
using Vnet.Configuration;
using Vnet.Forwarding;
using Vnet.Language;
using Vnet.Links;
using static Vnet.Tests.Language.Lang;

namespace Vnet.Tests.Language;

/// <summary>
/// The syntax: what each construct reads into, and one test per kind of syntax error with its exact
/// message, line and column. Meaning errors are in <see cref="OverlayCheckerTests"/>.
/// </summary>
public sealed class OverlayParserTests
{
    private const string Proxy = "proxy p at 192.0.2.1:5500\n";

    // What constructs read into.

    [Fact]
    public void Parse_Lab_ReadsEveryConstruct()
    {
        var o = Parse("""
            proxy home at 192.0.2.1:5500 {
              interface lan0 pcap lan
            }
            host h1 at 192.0.2.11:5500 {
              interface tap0 tap mtu 1500 bridge br0 {
                vm 02:00:00:00:00:01
              }
              rule any -> 02:00:00:00:00:02 to link h2
              rule 02:00:00:00:00:01 -> none to link home
              rule any -> multicast flood
              rule any -> 02:00:00:00:00:01 from link h2 to interface tap0
            }
            host h2 at 192.0.2.12:5500 { interface tap0 tap }
            link h1 -> home tcp streams 4
            link h2 -> home udp
            link h1 -> h2 udp port 5501
            """);

        var expected = new OverlayDescription(
            [
                new DaemonDecl("home", DaemonRole.Proxy, Ep("192.0.2.1:5500"), [new InterfaceDecl("lan0", InterfaceKind.Pcap, null, null, true, [])], []),
                new DaemonDecl("h1", DaemonRole.Host, Ep("192.0.2.11:5500"),
                    [new InterfaceDecl("tap0", InterfaceKind.Tap, 1500, "br0", false, [Mac(1)])],
                    [
                        new RuleDecl(MacMatch.Any, MacMatch.Exact(Mac(2)), null, RuleAction.To(PortRef.Link("h2"))),
                        new RuleDecl(MacMatch.Exact(Mac(1)), MacMatch.None, null, RuleAction.To(PortRef.Link("home"))),
                        new RuleDecl(MacMatch.Any, MacMatch.Multicast, null, RuleAction.Flood),
                        new RuleDecl(MacMatch.Any, MacMatch.Exact(Mac(1)), PortRef.Link("h2"), RuleAction.To(PortRef.Interface("tap0"))),
                    ]),
                new DaemonDecl("h2", DaemonRole.Host, Ep("192.0.2.12:5500"), [new InterfaceDecl("tap0", InterfaceKind.Tap, null, null, false, [])], []),
            ],
            [
                new LinkDecl("h1", "home", LinkTransport.Tcp, null, Streams: 4),
                new LinkDecl("h2", "home", LinkTransport.Udp, null),
                new LinkDecl("h1", "h2", LinkTransport.Udp, 5501),
            ]);
        Assert.Equal(expected, o);
    }

    [Fact]
    public void Parse_Positions_PointAtEachConstruct()
    {
        var o = Parse("""
            proxy p at 192.0.2.1:5500 {
              interface tap0 tap mtu 1500 bridge br0 {
                vm 02:00:00:00:00:01
              }
              rule any -> none from interface tap0 to link h
            }
            host h at 192.0.2.2:5500
            link h -> p port 6000
            """);

        var p = o.Daemons[0];
        Assert.Equal(new SourceSpan(FileName, 1, 1), p.Span);
        Assert.Equal(new SourceSpan(FileName, 1, 12), p.AddressAt);
        var tap = p.Interfaces[0];
        Assert.Equal(new SourceSpan(FileName, 2, 3), tap.Span);
        Assert.Equal(new SourceSpan(FileName, 2, 26), tap.MtuAt);
        Assert.Equal(new SourceSpan(FileName, 2, 31), tap.BridgeAt);
        Assert.Equal([new SourceSpan(FileName, 3, 8)], tap.VmsAt);
        var rule = p.Rules[0];
        Assert.Equal(new SourceSpan(FileName, 5, 3), rule.Span);
        Assert.Equal(new SourceSpan(FileName, 5, 8), rule.SourceAt);
        Assert.Equal(new SourceSpan(FileName, 5, 25), rule.IngressAt);
        Assert.Equal(new SourceSpan(FileName, 5, 43), rule.ActionAt);
        var link = o.Links[0];
        Assert.Equal(new SourceSpan(FileName, 8, 1), link.Span);
        Assert.Equal(new SourceSpan(FileName, 8, 6), link.FromAt);
        Assert.Equal(new SourceSpan(FileName, 8, 11), link.ToAt);
        Assert.Equal(new SourceSpan(FileName, 8, 18), link.PortAt);
    }

    [Fact]
    public void Parse_LinkWithoutTransport_Tcp()
    {
        var o = Parse(Proxy + "host h\nlink h -> p");
        Assert.Equal(new LinkDecl("h", "p", LinkTransport.Tcp, null), Assert.Single(o.Links));
    }

    [Fact]
    public void Parse_Ipv6Endpoint_Read()
    {
        var o = Parse("proxy p at [2001:db8::1]:5500");
        Assert.Equal(new IPEndPoint(IPAddress.Parse("2001:db8::1"), 5500), o.Daemons[0].Address);
    }

    [Fact]
    public void Parse_FileOfGarbage_ReportsTheFirstHundredErrorsAndHowManyMore()
    {
        // A file that is not a description (a log, a binary): one error per line, 5,000 lines.
        var text = string.Concat(Enumerable.Range(1, 5000).Select(i => $"garbage {i} here\n"));

        var result = OverlayParser.Parse(text, "junk.vnet");

        Assert.False(result.Success);
        Assert.Equal(OverlayParser.MaxErrors + 1, result.Diagnostics.Count);
        Assert.StartsWith("junk.vnet:1:1: expected 'proxy', 'host' or 'link'", result.Diagnostics[0].ToString(), StringComparison.Ordinal);
        Assert.StartsWith($"junk.vnet:{OverlayParser.MaxErrors}:1: ", result.Diagnostics[OverlayParser.MaxErrors - 1].ToString(), StringComparison.Ordinal);
        Assert.Equal($"junk.vnet: {5000 - OverlayParser.MaxErrors} more errors not shown (only the first {OverlayParser.MaxErrors} are)",
            result.Diagnostics[^1].ToString());
    }

    [Fact]
    public void Parse_ExactlyTheMostErrors_NoLineAboutMore()
    {
        var text = string.Concat(Enumerable.Range(1, OverlayParser.MaxErrors).Select(i => $"garbage {i}\n"));

        var result = OverlayParser.Parse(text, "f");

        Assert.Equal(OverlayParser.MaxErrors, result.Diagnostics.Count);
        Assert.DoesNotContain(result.Diagnostics, d => d.Message.Contains("not shown", StringComparison.Ordinal));
    }

    [Fact]
    public void Parse_WindowsLineEnds_SameAsUnix()
    {
        const string Text = "proxy p at 192.0.2.1:5500 {\n  interface lan0 pcap lan # the LAN\n}\n\nhost h { interface tap0 tap }\nlink h -> p udp\n";
        Assert.Equal(Parse(Text), Parse(Text.Replace("\n", "\r\n", StringComparison.Ordinal)));
    }

    [Fact]
    public void Parse_CommentsAndBlankLinesEverywhere_Ignored()
    {
        var o = Parse("""
            # head

            proxy p at 192.0.2.1:5500 { # after a brace
              # inside

              interface lan0 pcap lan#no space before the comment
            } # after the block
            #tail
            """);
        Assert.Equal("lan0", o.Daemons[0].Interfaces[0].Name);
    }

    [Fact]
    public void Parse_ArrowWithoutSpaces_Read()
    {
        var o = Parse(Proxy + "host h {\n interface t tap\n rule any->02-00-00-00-00-01 to interface t\n}\nlink h->p");
        Assert.Equal(MacMatch.Exact(Mac(1)), o.Daemons[1].Rules[0].Destination);
        Assert.Equal("h", o.Links[0].From);
    }

    // Syntax errors: one per kind, with the message, line and column.

    [Fact]
    public void Parse_RuleWithoutArrow_ExpectedArrowFoundTo()
    {
        Assert.Equal(
            "t.vnet:2:26: expected '->' after the source address, found 'to'",
            Error(Proxy.TrimEnd('\n') + " {\n  rule 02:00:00:00:00:01 to link h2\n}"));
    }

    [Fact]
    public void Parse_BadSourceMac_NamesTheWord()
    {
        Assert.Equal(
            "t.vnet:2:8: '02:00:zz:00:00:01' is not a MAC address: expected six pairs of hex digits such as 02:00:00:00:00:01",
            Error("proxy p {\n  rule 02:00:zz:00:00:01 -> any flood\n}"));
    }

    [Fact]
    public void Parse_SourceMissing_ExpectedSource()
    {
        Assert.Equal(
            "t.vnet:2:8: expected the source MAC address or 'any' after 'rule', found '->'",
            Error("proxy p {\n  rule -> any flood\n}"));
    }

    [Fact]
    public void Parse_NoneAsSource_SaysDestinationOnly()
    {
        Assert.Equal(
            "t.vnet:2:8: expected the source MAC address or 'any' after 'rule', found 'none' ('none' matches destinations only)",
            Error("proxy p {\n  rule none -> any flood\n}"));
    }

    [Fact]
    public void Parse_BadDestination_ExpectedDestination()
    {
        Assert.Equal(
            "t.vnet:2:15: expected the destination MAC address, 'any', 'multicast' or 'none' after '->', found 'broadcast'",
            Error("proxy p {\n  rule any -> broadcast flood\n}"));
    }

    [Fact]
    public void Parse_BadDestinationMac_NotAMac()
    {
        Assert.Equal(
            "t.vnet:2:15: '02:00:00:00:00' is not a MAC address: expected six pairs of hex digits such as 02:00:00:00:00:01",
            Error("proxy p {\n  rule any -> 02:00:00:00:00 flood\n}"));
    }

    [Fact]
    public void Parse_RuleWithoutAction_ExpectedToOrFlood()
    {
        Assert.Equal(
            "t.vnet:2:30: expected 'to PORT' or 'flood' after the arrival port, found the end of the line",
            Error("proxy p {\n  rule any -> any from link h\n}"));
    }

    [Fact]
    public void Parse_CliStylePort_SaysHowToWriteIt()
    {
        Assert.Equal(
            "t.vnet:2:22: expected 'link NAME' or 'interface NAME' after 'to', found 'link:h2' (write 'link h2')",
            Error("proxy p {\n  rule any -> any to link:h2\n}"));
    }

    [Fact]
    public void Parse_FromAfterAction_SaysWhereFromGoes()
    {
        Assert.Equal(
            "t.vnet:2:29: expected the end of the line after the rule, found 'from' ('from PORT' goes before the action)",
            Error("proxy p {\n  rule any -> any to link h from link g\n}"));
    }

    [Fact]
    public void Parse_PortNameMissing_ExpectedName()
    {
        Assert.Equal(
            "t.vnet:2:32: expected the interface name after 'interface', found '}'",
            Error("proxy p {\n  rule any -> any to interface }"));
    }

    [Theory]
    [InlineData("192.0.2.300:5500", "'192.0.2.300:5500' is not an endpoint: expected ADDRESS:PORT such as 192.0.2.1:5500 or [2001:db8::1]:5500")]
    [InlineData("example.org:5500", "'example.org:5500' is not an endpoint: expected ADDRESS:PORT such as 192.0.2.1:5500 or [2001:db8::1]:5500")]
    [InlineData("192.0.2:5500", "'192.0.2:5500' is not an endpoint: expected ADDRESS:PORT such as 192.0.2.1:5500 or [2001:db8::1]:5500")]
    [InlineData("192.0.2.01:5500", "'192.0.2.01:5500' is not an endpoint: expected ADDRESS:PORT such as 192.0.2.1:5500 or [2001:db8::1]:5500")]
    [InlineData("192.0.2.1", "'192.0.2.1' has no port: expected ADDRESS:PORT such as 192.0.2.1:5500")]
    [InlineData("[2001:db8::1]", "'[2001:db8::1]' has no port: expected ADDRESS:PORT such as [2001:db8::1]:5500")]
    [InlineData("192.0.2.1:70000", "'192.0.2.1:70000' has no valid port: expected a port from 1 to 65535 after the ':'")]
    [InlineData("192.0.2.1:0", "'192.0.2.1:0' has no valid port: expected a port from 1 to 65535 after the ':'")]
    [InlineData("192.0.2.1:", "'192.0.2.1:' has no valid port: expected a port from 1 to 65535 after the ':'")]
    [InlineData("2001:db8::1:5500", "'2001:db8::1:5500' is not an endpoint: an IPv6 address goes in brackets, as in [2001:db8::1]:5500")]
    [InlineData("[192.0.2.1]:5500", "'[192.0.2.1]:5500' is not an endpoint: expected ADDRESS:PORT such as 192.0.2.1:5500 or [2001:db8::1]:5500")]
    [InlineData("[fe80::1%2]:5500", "'[fe80::1%2]:5500' is not an endpoint: expected ADDRESS:PORT such as 192.0.2.1:5500 or [2001:db8::1]:5500")]
    public void Parse_BadAddress_SaysWhatIsWrong(string address, string message)
    {
        Assert.Equal($"t.vnet:1:12: {message}", Error($"proxy p at {address}"));
    }

    [Fact]
    public void Parse_AtWithoutAddress_ExpectedAddress()
    {
        Assert.Equal("t.vnet:1:11: expected the daemon's ADDRESS:PORT after 'at', found the end of the line", Error("proxy p at\n"));
    }

    [Fact]
    public void Parse_DaemonWithoutName_ExpectedName()
    {
        Assert.Equal("t.vnet:2:6: expected the host's name after 'host', found '{'", Error(Proxy + "host { interface tap0 tap }"));
    }

    [Fact]
    public void Parse_InvalidName_SaysWhatANameIs()
    {
        Assert.Equal(
            "t.vnet:1:7: expected the proxy's name after 'proxy', found '-p', which is not a name (letters, digits, '-', '_' and '.', starting with a letter or digit, at most 32 characters)",
            Error("proxy -p"));
    }

    [Fact]
    public void Parse_TooLongName_NotAName()
    {
        var name = new string('n', 33);
        Assert.Contains($"found '{name}', which is not a name", Error($"proxy {name}"), StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_WordAfterAddress_ExpectedBlockOrLineEnd()
    {
        Assert.Equal(
            "t.vnet:1:27: expected '{' or the end of the line after the daemon's address, found 'extra'",
            Error("proxy p at 192.0.2.1:5500 extra"));
    }

    [Fact]
    public void Parse_WordAfterName_ExpectedAtBlockOrLineEnd()
    {
        Assert.Equal(
            "t.vnet:1:9: expected 'at ADDRESS:PORT', '{' or the end of the line after the daemon's name, found '192.0.2.1:5500'",
            Error("proxy p 192.0.2.1:5500"));
    }

    [Fact]
    public void Parse_UnterminatedBlock_PointsAtTheOpeningBrace()
    {
        Assert.Equal(
            "t.vnet:2:27: expected '}' to close the block of host h1 opened here, found the end of the file",
            Error(Proxy + "host h1 at 192.0.2.2:5500 {\n  interface tap0 tap\n"));
    }

    [Fact]
    public void Parse_UnterminatedNestedBlocks_BothReported()
    {
        Assert.Equal(
            [
                "t.vnet:1:9: expected '}' to close the block of proxy p opened here, found the end of the file",
                "t.vnet:2:22: expected '}' to close the block of interface tap0 opened here, found the end of the file",
            ],
            Errors("proxy p {\n  interface tap0 tap {\n    vm 02:00:00:00:00:01\n"));
    }

    [Fact]
    public void Parse_BlockOnNextLine_SaysWhereBlocksOpen()
    {
        Assert.Equal(
            "t.vnet:2:1: expected 'proxy', 'host' or 'link', found '{' (a block opens on the line of its header)",
            Error("proxy p\n{\n  interface lan0 pcap lan\n}"));
    }

    [Fact]
    public void Parse_StrayClosingBrace_NoBlockIsOpen()
    {
        Assert.Equal("t.vnet:2:1: expected 'proxy', 'host' or 'link', found '}' (no block is open)", Error(Proxy + "}"));
    }

    [Fact]
    public void Parse_InterfaceAtTopLevel_SaysItGoesInADaemon()
    {
        Assert.Equal(
            "t.vnet:2:1: expected 'proxy', 'host' or 'link', found 'interface' ('interface' goes in a daemon's block)",
            Error(Proxy + "interface tap0 tap"));
    }

    [Fact]
    public void Parse_KeywordInUpperCase_NotAKeyword()
    {
        Assert.Equal("t.vnet:2:1: expected 'proxy', 'host' or 'link', found 'Host'", Error(Proxy + "Host h"));
    }

    [Fact]
    public void Parse_VmInDaemonBlock_SaysItGoesInAnInterface()
    {
        Assert.Equal(
            "t.vnet:2:3: expected 'interface', 'rule' or '}' in the block of proxy p, found 'vm' ('vm' lines go in an interface's block)",
            Error("proxy p {\n  vm 02:00:00:00:00:01\n}"));
    }

    [Fact]
    public void Parse_LinkInDaemonBlock_SaysLinksAreOutside()
    {
        Assert.Equal(
            "t.vnet:2:3: expected 'interface', 'rule' or '}' in the block of proxy p, found 'link' (links are declared outside the daemons' blocks)",
            Error("proxy p {\n  link h -> p\n}"));
    }

    [Fact]
    public void Parse_InterfaceWithoutKind_ExpectedKind()
    {
        Assert.Equal(
            "t.vnet:2:18: expected the interface kind 'tap' or 'pcap' after the name, found 'mtu'",
            Error("proxy p {\n  interface tap0 mtu 1500\n}"));
    }

    [Fact]
    public void Parse_UnknownInterfaceOption_ListsTheOptions()
    {
        Assert.Equal(
            "t.vnet:2:22: expected 'mtu', 'bridge', 'lan', '{' or the end of the line, found 'mut'",
            Error("proxy p {\n  interface tap0 tap mut 1500\n}"));
    }

    [Fact]
    public void Parse_MtuNotANumber_ExpectedMtu()
    {
        Assert.Equal("t.vnet:2:26: expected the MTU after 'mtu', found 'jumbo'", Error("proxy p {\n  interface tap0 tap mtu jumbo\n}"));
    }

    [Fact]
    public void Parse_MtuTooLargeForANumber_TooLarge()
    {
        Assert.Equal(
            "t.vnet:2:26: expected the MTU after 'mtu', found '99999999999', which is too large",
            Error("proxy p {\n  interface tap0 tap mtu 99999999999\n}"));
    }

    [Fact]
    public void Parse_OptionTwice_GivenTwice()
    {
        Assert.Equal("t.vnet:2:31: 'mtu' is given twice", Error("proxy p {\n  interface tap0 tap mtu 1500 mtu 9000\n}"));
        Assert.Equal("t.vnet:2:27: 'lan' is given twice", Error("proxy p {\n  interface eth0 pcap lan lan\n}"));
    }

    [Fact]
    public void Parse_VmWithBadMac_NotAMac()
    {
        Assert.Equal(
            "t.vnet:3:8: '02:00:00:00:00:1g' is not a MAC address: expected six pairs of hex digits such as 02:00:00:00:00:01",
            Error("proxy p {\n  interface tap0 tap {\n    vm 02:00:00:00:00:1g\n  }\n}"));
    }

    [Fact]
    public void Parse_VmWithoutMac_ExpectedMac()
    {
        Assert.Equal(
            "t.vnet:3:8: expected the VM's MAC address after 'vm', found 'any'",
            Error("proxy p {\n  interface tap0 tap {\n    vm any\n  }\n}"));
    }

    [Fact]
    public void Parse_RuleInInterfaceBlock_AsksForTheMissingBrace()
    {
        Assert.Equal(
            "t.vnet:3:5: expected 'vm' or '}' in the block of interface tap0, found 'rule' (is a '}' missing?)",
            Error("proxy p {\n  interface tap0 tap {\n    rule any -> any flood\n  }\n}"));
    }

    [Fact]
    public void Parse_LinkWithoutArrow_ExpectedArrow()
    {
        Assert.Equal("t.vnet:2:8: expected '->' after the name of the daemon that dials, found 'p'", Error(Proxy + "link h p"));
    }

    [Fact]
    public void Parse_LinkWithoutPeer_ExpectedDialedName()
    {
        Assert.Equal("t.vnet:2:11: expected the name of the daemon dialed, after '->', found the end of the file", Error(Proxy + "link h -> "));
    }

    [Fact]
    public void Parse_UnknownLinkOption_ListsTheOptions()
    {
        Assert.Equal(
            "t.vnet:2:13: expected 'tcp', 'udp', 'port', 'streams' or the end of the line after the link, found 'sctp'",
            Error(Proxy + "link h -> p sctp"));
    }

    [Fact]
    public void Parse_TransportTwice_GivenTwice()
    {
        Assert.Equal("t.vnet:2:17: the transport is given twice", Error(Proxy + "link h -> p udp tcp"));
    }

    [Fact]
    public void Parse_Streams_GivenTwiceOrNotANumber_PointedAt()
    {
        Assert.Equal("t.vnet:2:23: 'streams' is given twice", Error(Proxy + "link h -> p streams 2 streams 4"));
        Assert.Equal("t.vnet:2:21: expected the number of streams after 'streams', found 'many'", Error(Proxy + "link h -> p streams many"));
        var link = Parse(Proxy + "host h\nlink h -> p port 6000 streams 3").Links[0];
        Assert.Equal(3, link.Streams);
        Assert.Equal(new SourceSpan(FileName, 3, 31), link.StreamsAt);
        Assert.Equal("link h -> p tcp port 6000 streams 3", link.ToString());
        Assert.Equal("link h -> p tcp", Parse(Proxy + "host h\nlink h -> p streams 1").Links[0].ToString());
    }

    [Fact]
    public void Parse_LinkPortNotANumber_ExpectedPort()
    {
        Assert.Equal("t.vnet:2:18: expected the port number after 'port', found 'http'", Error(Proxy + "link h -> p port http"));
    }

    // Recovery: every statement's first error, and never a half model.

    [Fact]
    public void Parse_ErrorsInSeveralStatements_AllReportedInOrder()
    {
        var errors = Errors("""
            proxy p at 192.0.2.1:5500 {
              interface lan0 pcap lan
              rule any 02:00:00:00:00:01 to link h
              rule any -> any to link
            }
            host h at 192.0.2.300:5500 {
              interface tap0 tap mtu big
              rule this is never reported
            }
            host g
            link h -> p sctp
            """);
        Assert.Equal(
            [
                "t.vnet:3:12: expected '->' after the source address, found '02:00:00:00:00:01'",
                "t.vnet:4:26: expected the link name after 'link', found the end of the line",
                "t.vnet:6:11: '192.0.2.300:5500' is not an endpoint: expected ADDRESS:PORT such as 192.0.2.1:5500 or [2001:db8::1]:5500",
                "t.vnet:11:13: expected 'tcp', 'udp', 'port', 'streams' or the end of the line after the link, found 'sctp'",
            ],
            errors);
    }

    [Fact]
    public void Parse_SyntaxError_MeaningNotChecked()
    {
        // No proxy and a bad rule: only the syntax error, since a broken model means nothing.
        Assert.Equal("t.vnet:2:12: expected '->' after the source address, found 'flood'", Error("host h {\n  rule any flood\n}"));
    }

    [Fact]
    public void Parse_OneBadLineInAGoodFile_NoModel()
    {
        var result = OverlayParser.Parse(Proxy + "host h\nlink h -> p\nlink h p", FileName);
        Assert.False(result.Success);
        Assert.Null(result.Overlay);
        Assert.Throws<FormatException>(() => result.OrThrow());
    }

    // Endpoints as the CLI may read them.

    [Theory]
    [InlineData("192.0.2.1:5500")]
    [InlineData("0.0.0.0:1")]
    [InlineData("255.255.255.255:65535")]
    [InlineData("[2001:db8::1]:5500")]
    [InlineData("[::]:5500")]
    [InlineData("[::ffff:192.0.2.1]:5500")]
    public void TryParseEndpoint_Formatted_RoundTrips(string text)
    {
        Assert.True(OverlayParser.TryParseEndpoint(text, out var endpoint, out var problem), problem);
        Assert.Equal(IPEndPoint.Parse(text), endpoint);
        Assert.True(OverlayParser.TryParseEndpoint(OverlayFormatter.Endpoint(endpoint), out var again, out _));
        Assert.Equal(endpoint, again);
    }
}
