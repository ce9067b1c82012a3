import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOPosix
import PipehookStore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// `GET /media/{job_id}` and `GET /media/{job_id}/thumbnail` (issue 14): the file a job's download
/// step archived, and the thumbnail an exec step made next to it (`<video>.jpg`), for the status
/// page's `<video>` element. Admin-only like every page; HTTP range requests (a browser seeks with
/// them); never a file outside the archive folders the configuration names now.
enum ArchiveMedia {
    /// What a `Range` header asks of a file of `size` bytes (RFC 9110 §14).
    enum RangeRequest: Equatable {
        /// No range, or one we may ignore (another unit, several ranges, bad syntax): the whole file.
        case whole
        case part(ClosedRange<Int64>)
        /// A syntactically good single range that starts past the end: 416.
        case unsatisfiable
    }

    /// One `bytes=` range: `a-b`, `a-` (to the end) or `-n` (the last n bytes). A server may ignore
    /// a Range header it does not serve, so anything else is the whole file rather than an error.
    static func range(_ header: String?, size: Int64) -> RangeRequest {
        guard let header else { return .whole }
        let value = header.trimmingCharacters(in: .whitespaces)
        guard value.lowercased().hasPrefix("bytes=") else { return .whole }
        let spec = value.dropFirst("bytes=".count).trimmingCharacters(in: .whitespaces)
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { return .whole }
        let first = spec[..<dash].trimmingCharacters(in: .whitespaces)
        let last = spec[spec.index(after: dash)...].trimmingCharacters(in: .whitespaces)
        func number(_ text: String) -> Int64? {
            guard !text.isEmpty, text.utf8.count <= 18, text.utf8.allSatisfy({ (48...57).contains($0) }) else { return nil }
            return Int64(text)
        }
        if first.isEmpty {
            // The last n bytes; "-0" asks for nothing.
            guard let suffix = number(last) else { return .whole }
            guard suffix > 0, size > 0 else { return .unsatisfiable }
            return .part(max(0, size - suffix)...(size - 1))
        }
        guard let start = number(first) else { return .whole }
        let end: Int64
        if last.isEmpty {
            end = size - 1
        } else {
            guard let given = number(last), given >= start else { return .whole }
            end = min(given, size - 1)
        }
        guard start < size else { return .unsatisfiable }
        return .part(start...end)
    }

    /// The content type a browser needs to play or show the file, from its extension.
    static func contentType(_ path: String) -> String {
        switch (path as NSString).pathExtension.lowercased() {
        case "mp4", "m4v": "video/mp4"
        case "webm": "video/webm"
        case "mov": "video/quicktime"
        case "mkv": "video/x-matroska"
        case "ogv": "video/ogg"
        case "gif": "image/gif"
        case "jpg", "jpeg": "image/jpeg"
        case "png": "image/png"
        case "webp": "image/webp"
        default: "application/octet-stream"
        }
    }

    /// Why a file may not be served, in words for the JSON error.
    enum Refusal: Error, Equatable {
        case missing
        case outsideArchive
        case notAFile
    }

    /// The file's real path and size when it is a regular file inside one of `roots` (after every
    /// symlink is resolved, so neither `..` nor a link can lead out of the archive).
    static func locate(_ path: String, roots: [String]) -> Result<(path: String, size: Int64), Refusal> {
        guard let real = realPath(path) else { return .failure(.missing) }
        let inside = roots.contains { root in
            guard let root = realPath(root) else { return false }
            let prefix = root.hasSuffix("/") ? root : root + "/"
            return real.hasPrefix(prefix)
        }
        guard inside else { return .failure(.outsideArchive) }
        var info = stat()
        guard stat(real, &info) == 0 else { return .failure(.missing) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { return .failure(.notAFile) }
        return .success((real, Int64(info.st_size)))
    }

    static func realPath(_ path: String) -> String? {
        guard !path.utf8.contains(0), let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// The thumbnail `handlers/thumbnail.sh` writes next to a video: the same name with `.jpg`.
    static func thumbnailPath(of file: String) -> String {
        ((file as NSString).deletingPathExtension) + ".jpg"
    }

    static func register(on router: Router<BasicRequestContext>, _ admin: AdminEndpoints) {
        let files = FileIO(threadPool: .singleton)
        router.get("/media/:id") { request, context in
            try await serve(request, context, admin: admin, files: files, thumbnail: false)
        }
        router.head("/media/:id") { request, context in
            try await serve(request, context, admin: admin, files: files, thumbnail: false)
        }
        router.get("/media/:id/thumbnail") { request, context in
            try await serve(request, context, admin: admin, files: files, thumbnail: true)
        }
    }

    static func serve(
        _ request: Request, _ context: BasicRequestContext, admin: AdminEndpoints, files: FileIO, thumbnail: Bool
    ) async throws -> Response {
        try admin.auth.require(request)
        let jobID = context.parameters.get("id") ?? ""
        guard JobID.isValid(jobID) else { throw APIError.jobNotFound }
        let job: JobRecord?
        do {
            job = try await admin.store.job(id: jobID)
        } catch {
            throw APIError.storeUnavailable
        }
        guard let job else { throw APIError.jobNotFound }
        guard let artifact = job.artifact else {
            throw APIError(.notFound, code: "no_artifact", message: "this job has not archived a file")
        }
        let wanted = thumbnail ? thumbnailPath(of: artifact.file) : artifact.file
        let roots = admin.archiveDirectories()
        // realpath and stat are system calls on the file system: off the cooperative pool.
        let located = try await NIOThreadPool.singleton.runIfActive { locate(wanted, roots: roots) }
        let file: (path: String, size: Int64)
        switch located {
        case .success(let found): file = found
        case .failure(.missing):
            throw APIError(.notFound, code: thumbnail ? "no_thumbnail" : "artifact_missing",
                           message: thumbnail ? "no thumbnail next to this job's file" : "the archived file is no longer there")
        case .failure(.outsideArchive):
            throw APIError(.forbidden, code: "outside_archive",
                           message: "the file is not inside a download folder of the routes configured now")
        case .failure(.notAFile):
            throw APIError(.notFound, code: "artifact_missing", message: "the archived path is not a regular file")
        }
        var headers: HTTPFields = [
            .contentType: contentType(file.path),
            .acceptRanges: "bytes",
            .cacheControl: "private, no-store",
            .xContentTypeOptions: "nosniff",
            // Served bytes are never a document: no script runs even if a browser were to render one.
            .contentSecurityPolicy: "default-src 'none'; sandbox",
            StatusPage.referrerPolicy: "no-referrer",
        ]
        if !thumbnail { headers[HTTPField.Name("X-Content-SHA256")!] = artifact.sha256 }
        let range = range(request.headers[.range], size: file.size)
        let isHead = request.method == .head
        switch range {
        case .unsatisfiable:
            headers[.contentRange] = "bytes */\(file.size)"
            headers[.contentType] = "application/json"
            return Response(
                status: .rangeNotSatisfiable, headers: headers,
                body: ResponseBody(byteBuffer: ByteBuffer(string: #"{"error":{"code":"range_not_satisfiable","message":"the range starts past the end of the file"}}"#))
            )
        case .whole:
            headers[.contentLength] = String(file.size)
            if isHead || file.size == 0 { return Response(status: .ok, headers: headers) }
            let body = try await files.loadFile(path: file.path, range: 0...Int(file.size - 1), context: context)
            return Response(status: .ok, headers: headers, body: body)
        case .part(let part):
            headers[.contentRange] = "bytes \(part.lowerBound)-\(part.upperBound)/\(file.size)"
            headers[.contentLength] = String(part.upperBound - part.lowerBound + 1)
            if isHead { return Response(status: .partialContent, headers: headers) }
            let body = try await files.loadFile(path: file.path, range: Int(part.lowerBound)...Int(part.upperBound), context: context)
            return Response(status: .partialContent, headers: headers, body: body)
        }
    }
}
