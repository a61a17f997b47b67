using System.Runtime.InteropServices;

namespace Vnet.Fuzz;

/// <summary>The coverage map the instrumented assembly writes to.</summary>
internal static class Coverage
{
    /// <summary>
    /// Outside afl-fuzz (replay, seeds), gives the instrumented code a map of its own: SharpFuzz sets
    /// one only when it runs the fuzzing loop, and without one the first branch writes through null.
    /// </summary>
    public static unsafe void UseScratchMap()
    {
        if (SharpFuzz.Common.Trace.SharedMem == null)
            SharpFuzz.Common.Trace.SharedMem = (byte*)NativeMemory.AllocZeroed(1 << 16);
    }
}
