using System.Text;
using Vnet.Forwarding;
using Vnet.Links.Security;

namespace Vnet.Configuration;

/// <summary>
/// The Proxy's hosts file (<c>hosts_file</c>): the hosts admitted at run time with <c>vnet host
/// admit</c>, one <c>NAME PUBLIC_KEY</c> a line, <c>#</c> comments, kept across restarts. Public
/// keys only, no secret. Hosts of the configuration (<c>[[host]]</c>) are not written here: the
/// configuration stays their one source, so editing it and reloading cannot meet an older copy.
/// </summary>
public static class HostsFile
{
    /// <summary>
    /// The admissions in <paramref name="path"/>, each naming its file and line; none when the file
    /// does not exist yet (the first admission creates it). A line that is not <c>NAME PUBLIC_KEY</c>,
    /// or a name listed twice, is a <see cref="ConfigException"/> naming the file and line.
    /// </summary>
    public static IReadOnlyList<AdmittedHost> Read(string path)
    {
        string[] lines;
        try
        {
            if (!File.Exists(path))
                return [];
            lines = File.ReadAllLines(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException(path, $"cannot read the hosts file: {e.Message}");
        }
        var hosts = new List<AdmittedHost>();
        var lineOf = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < lines.Length; i++)
        {
            var where = $"{path}:{i + 1}";
            var text = lines[i].Trim();
            if (text.Length == 0 || text.StartsWith('#'))
                continue;
            var parts = text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length != 2)
                throw new ConfigException(where, "expected 'NAME PUBLIC_KEY' (one host a line, # for comments)");
            if (!Names.IsValid(parts[0]))
                throw new ConfigException(where, $"'{parts[0]}' is not a valid daemon name (letters, digits, '-', '_', '.'; at most {Names.MaxLength})");
            if (!PublicKeyId.TryParse(parts[1], out var key))
                throw new ConfigException(where, $"'{parts[1]}' is not a public key (32 bytes in base64; 'vnet pubkey' prints one)");
            if (lineOf.TryGetValue(parts[0], out var first))
                throw new ConfigException(where, $"host '{parts[0]}' is listed again (first on line {first})");
            lineOf[parts[0]] = i + 1;
            hosts.Add(new AdmittedHost(parts[0], key, where));
        }
        return hosts;
    }

    /// <summary>Replaces the file at once (a new file moved over the old), so a crash leaves the old list or the new one.</summary>
    public static void Write(string path, IEnumerable<(string Name, PublicKeyId Key)> hosts)
    {
        var text = new StringBuilder("# hosts admitted at run time ('vnet host admit'): NAME PUBLIC_KEY (written by the Proxy)\n");
        foreach (var (name, key) in hosts.OrderBy(h => h.Name, StringComparer.Ordinal))
            text.Append(name).Append(' ').Append(key).Append('\n');
        var temp = path + ".new";
        File.WriteAllText(temp, text.ToString());
        File.Move(temp, path, overwrite: true);
    }
}
