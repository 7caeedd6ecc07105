using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace Ledger.Retention;

/// <summary>Why writing an archive failed, as <c>ledger_retention_failures_total{reason}</c> counts it.</summary>
public sealed class ArchiveWriteException(string reason, string message, Exception? inner = null) : Exception(message, inner)
{
    public string Reason { get; } = reason;
}

/// <summary>
/// Where bundles live and how they are written. A bundle's path is
/// <c>{Directory}/{h0h1}/{h2h3}/{runId}.{bundle:000}.{digest[..16]}.rla</c>, where <c>h</c> is the
/// SHA-256 of the run id: two levels of 256 folders, so no folder holds more than a few thousand
/// files at tens of millions of runs. A bundle is written to a temporary file beside its final
/// name, flushed to disk, renamed (never over an existing file: the first one written stays), and
/// its folder is flushed too, so that after a crash a bundle is either whole under its name or absent.
/// </summary>
public sealed class ArchiveFiles(string? directory, long minFreeBytes)
{
    public const string Extension = ".rla";
    private const string TempMarker = ".tmp-";

    public string? Root { get; } = string.IsNullOrWhiteSpace(directory) ? null : Path.GetFullPath(directory);

    /// <summary>The bundle's path relative to the root, as markers and the archive table keep it.</summary>
    public static string RelativePath(string runId, int bundle, string contentSha256)
    {
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(runId)));
        return $"{hash[..2]}/{hash[2..4]}/{FileName(runId)}.{bundle:000}.{contentSha256[..16]}{Extension}";
    }

    /// <summary>The run id as a file name: run ids are already safe ([A-Za-z0-9._:@-]); anything else is escaped.</summary>
    private static string FileName(string runId)
    {
        var name = new StringBuilder(runId.Length);
        foreach (var c in runId)
        {
            if (char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or ':' or '@' or '-') name.Append(c);
            else name.Append('%').Append(((int)c).ToString("X4"));
        }
        return name.ToString();
    }

    public string FullPath(string relative) =>
        Path.Combine(Root ?? throw new InvalidOperationException("Ledger:Retention:Directory is not set"), relative);

    /// <summary>
    /// Writes a bundle atomically: <paramref name="write"/> fills a temporary file in the run's folder
    /// and returns its content's digest, which names it; the file is flushed, renamed and its folder
    /// flushed. When a file of that name is already there (a crash after the rename, another node),
    /// it is left as it is and <c>Fresh</c> is false: the caller reads it back and checks it like its own.
    /// </summary>
    public async Task<(string Relative, bool Fresh)> WriteAsync(string runId, int bundle, Func<Stream, Task<string>> write)
    {
        if (Root is null) throw new ArchiveWriteException("no-directory", "Ledger:Retention:Directory is not set: there is nowhere to write archives.");
        var folderRelative = Path.GetDirectoryName(RelativePath(runId, bundle, new string('0', 16)))!;
        var folder = Path.Combine(Root, folderRelative);
        try
        {
            CreateFolder(folder);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException && !(e is IOException io && IsNoSpace(io)))
        {
            throw new ArchiveWriteException("directory-unwritable", $"The archive directory {Root} cannot be written: {e.Message}", e);
        }
        try
        {
            EnsureRoom(folder);
            var temp = Path.Combine(folder, FileName(runId) + TempMarker + Guid.NewGuid().ToString("N")[..12]);
            try
            {
                string relative;
                await using (var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
                {
                    relative = RelativePath(runId, bundle, await write(file));
                    file.Flush(flushToDisk: true);
                }
                var path = FullPath(relative);
                if (File.Exists(path)) return (relative, false);
                try
                {
                    File.Move(temp, path, overwrite: false);
                }
                catch (IOException) when (File.Exists(path))
                {
                    return (relative, false);
                }
                SyncFolder(folder);
                return (relative, true);
            }
            finally
            {
                if (File.Exists(temp)) TryDelete(temp);
            }
        }
        catch (ArchiveWriteException)
        {
            throw;
        }
        catch (UnauthorizedAccessException e)
        {
            throw new ArchiveWriteException("directory-unwritable", $"The archive directory {Root} cannot be written: {e.Message}", e);
        }
        catch (IOException e) when (IsNoSpace(e))
        {
            throw new ArchiveWriteException("disk-full", $"The archive directory {Root} is full: {e.Message}", e);
        }
        catch (IOException e) when (IsNotWritable(e))
        {
            throw new ArchiveWriteException("directory-unwritable", $"The archive directory {Root} cannot be written: {e.Message}", e);
        }
        catch (IOException e)
        {
            throw new ArchiveWriteException("io-error", $"Writing an archive under {Root} failed: {e.Message}", e);
        }
    }

    /// <summary>Removes temporary files a crash left in a run's folder (older than an hour: another node may be writing one now).</summary>
    public void SweepTemporaries(string runId)
    {
        if (Root is null) return;
        var folder = Path.GetDirectoryName(FullPath(RelativePath(runId, 1, new string('0', 16))))!;
        if (!Directory.Exists(folder)) return;
        try
        {
            foreach (var file in Directory.EnumerateFiles(folder, "*" + TempMarker + "*"))
            {
                // The file system's clock, not the ledger's: both sides of the comparison are file times.
                if (File.GetLastWriteTimeUtc(file) < DateTime.UtcNow.AddHours(-1)) TryDelete(file);
            }
        }
        catch (IOException)
        {
            // best effort
        }
        catch (UnauthorizedAccessException)
        {
            // best effort
        }
    }

    /// <summary>Bytes free where archives go, or null when unknown.</summary>
    public long? FreeBytes()
    {
        if (Root is null) return null;
        try
        {
            var existing = Root;
            while (!Directory.Exists(existing)) existing = Path.GetDirectoryName(existing) ?? "/";
            return new DriveInfo(existing).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            return null;
        }
    }

    private void EnsureRoom(string folder)
    {
        if (minFreeBytes <= 0) return;
        long free;
        try
        {
            free = new DriveInfo(folder).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            return;
        }
        if (free < minFreeBytes)
        {
            throw new ArchiveWriteException("disk-full",
                $"The archive directory {Root} has {free:N0} bytes free, under Ledger:Retention:MinFreeBytes ({minFreeBytes:N0}); nothing is archived until there is room.");
        }
    }

    /// <summary>Creates the folder and each missing parent, flushing every parent whose entries changed.</summary>
    private static void CreateFolder(string folder)
    {
        if (Directory.Exists(folder)) return;
        var parent = Path.GetDirectoryName(folder);
        if (parent is not null) CreateFolder(parent);
        Directory.CreateDirectory(folder);
        if (parent is not null) SyncFolder(parent);
    }

    /// <summary>fsync on a folder, so that a rename or a new entry in it survives a power loss (POSIX only; elsewhere a no-op).</summary>
    public static void SyncFolder(string folder)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS() && !OperatingSystem.IsFreeBSD()) return;
        var fd = Posix.open(folder, Posix.ReadOnly | (OperatingSystem.IsLinux() ? Posix.LinuxDirectory : 0));
        if (fd < 0) return;
        try
        {
            if (Posix.fsync(fd) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw new IOException($"fsync of folder {folder} failed (errno {errno})", errno);
            }
        }
        finally
        {
            Posix.close(fd);
        }
    }

    private static bool IsNoSpace(IOException e) => (e.HResult & 0xFFFF) is 28 or 0x70 || e.Message.Contains("space", StringComparison.OrdinalIgnoreCase);

    private static bool IsNotWritable(IOException e) =>
        (e.HResult & 0xFFFF) is 13 or 20 or 30 || e.Message.Contains("read-only", StringComparison.OrdinalIgnoreCase)
                                               || e.Message.Contains("Not a directory", StringComparison.OrdinalIgnoreCase);

    private static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    private static class Posix
    {
        public const int ReadOnly = 0;
        public const int LinuxDirectory = 0x10000;

        [DllImport("libc", SetLastError = true)]
        public static extern int open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

        [DllImport("libc", SetLastError = true)]
        public static extern int fsync(int fd);

        [DllImport("libc", SetLastError = true)]
        public static extern int close(int fd);
    }
}
