using System.Globalization;
using System.Text;

namespace Vnet.Cli;

/// <summary>Plain aligned tables for the terminal, like <c>ip -br</c> or <c>ovs-ofctl dump-flows</c>.</summary>
internal sealed class TableWriter
{
    private readonly string[] _headers;
    private readonly List<string[]> _rows = [];

    public TableWriter(params string[] headers) => _headers = headers;

    public void Add(params object?[] cells)
    {
        var row = new string[_headers.Length];
        for (var i = 0; i < row.Length; i++)
            row[i] = i < cells.Length ? Format(cells[i]) : "";
        _rows.Add(row);
    }

    public static string Format(object? value) => value switch
    {
        null => "-",
        bool b => b ? "yes" : "no",
        double d => d.ToString("0.###", CultureInfo.InvariantCulture),
        DateTimeOffset t => t.ToLocalTime().ToString("HH:mm:ss", CultureInfo.InvariantCulture),
        Enum e => System.Text.Json.JsonNamingPolicy.CamelCase.ConvertName(e.ToString()),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };

    public static string Bytes(long bytes) => bytes switch
    {
        < 10_000 => $"{bytes} B",
        < 10_000_000 => $"{bytes / 1000.0:0.#} kB",
        < 10_000_000_000 => $"{bytes / 1e6:0.#} MB",
        _ => $"{bytes / 1e9:0.##} GB",
    };

    public override string ToString()
    {
        var widths = new int[_headers.Length];
        for (var i = 0; i < widths.Length; i++)
        {
            widths[i] = _headers[i].Length;
            foreach (var r in _rows)
                widths[i] = Math.Max(widths[i], r[i].Length);
        }
        var sb = new StringBuilder();
        Append(sb, _headers, widths);
        foreach (var r in _rows)
            Append(sb, r, widths);
        return sb.ToString();
    }

    private static void Append(StringBuilder sb, string[] cells, int[] widths)
    {
        for (var i = 0; i < cells.Length; i++)
        {
            sb.Append(i == cells.Length - 1 ? cells[i] : cells[i].PadRight(widths[i] + 2));
        }
        sb.Append('\n');
    }
}
