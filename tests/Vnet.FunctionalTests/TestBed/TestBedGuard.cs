namespace Vnet.Tests.TestBed;

/// <summary>
/// Checks once per test run that namespace tests can run here. They fail, never skip, when they
/// cannot: CI runs as root with <c>ip netns</c>, so a skip there would only hide breakage.
/// </summary>
internal static class TestBedGuard
{
    private static readonly Lazy<string?> Problem = new(FindProblem);

    /// <summary>Throws, saying what is missing and how to run the tests, unless root and <c>ip netns</c> are available.</summary>
    public static void ThrowIfUnavailable()
    {
        if (Problem.Value is { } problem)
            throw new InvalidOperationException(
                $"This end-to-end test needs root and 'ip netns' (iproute2): {problem}. Run the tests with 'sudo ./test.sh'.");
    }

    private static string? FindProblem()
    {
        if (!OperatingSystem.IsLinux())
            return "network namespaces exist on Linux only";
        if (TestNative.GetEuid() != 0)
            return $"the test host runs as uid {TestNative.GetEuid()}, not root";
        Sh.Result r;
        try
        {
            r = Sh.TryExec("ip", ["netns", "list"], 10);
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return $"cannot run 'ip' ({e.Message}); install iproute2";
        }
        if (!r.Ok)
            return $"'ip netns list' failed ({r.ExitCode}): {r.Stderr.Trim()}";
        return null;
    }
}
