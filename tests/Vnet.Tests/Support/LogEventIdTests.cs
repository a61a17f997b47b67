using System.Reflection;
using Microsoft.Extensions.Logging;
using Vnet.Links;

namespace Vnet.Tests.Support;

/// <summary>
/// Every source-generated log message of a class has its own event id: an operator filters or alerts
/// on the id, so two messages under one id (the link manager's stream fallback and its clock's
/// failure were both 111) make one look like the other. The generator does not refuse it.
/// </summary>
public sealed class LogEventIdTests
{
    [Fact]
    public void EveryLogMessage_HasAnEventIdOfItsOwnInItsClass()
    {
        // Vnet.Core holds every [LoggerMessage] of the product.
        var messages = 0;
        var clashes = new List<string>();
        foreach (var type in typeof(LinkManager).Assembly.GetTypes())
        {
            var ids = new Dictionary<int, string>();
            foreach (var method in type.GetMethods(BindingFlags.Static | BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            {
                if (method.GetCustomAttribute<LoggerMessageAttribute>() is not { } message)
                    continue;
                messages++;
                if (!ids.TryAdd(message.EventId, method.Name))
                    clashes.Add($"{type.FullName}: {ids[message.EventId]} and {method.Name} are both event {message.EventId}");
            }
        }
        Assert.True(messages > 50, $"only {messages} log messages found: the attribute is not where this test looks");
        Assert.Empty(clashes);
    }
}
